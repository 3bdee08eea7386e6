"""Stand-in for the `flash_attn` package of flash-attn-4 (tests/trainer/fa4_standin/flash_attn/cute)."""
