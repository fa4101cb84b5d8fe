"""Key management: ML-KEM-768+X25519 hybrid wrapping and ML-DSA-65 signatures."""
