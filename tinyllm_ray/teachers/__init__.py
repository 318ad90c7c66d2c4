"""The teacher stage: inference engines, the Ray Data stage that writes rationales, the rationale store."""
