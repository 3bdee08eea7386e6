"""Stand-in for flash-attn-4's `flash_attn.cute`: re-exports what the real package's __init__ does (4.0.0b40)."""
from .interface import flash_attn_func, flash_attn_varlen_func

__all__ = ["flash_attn_func", "flash_attn_varlen_func"]
