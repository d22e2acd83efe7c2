"""The BentoML service of segserve (bento/service.py)."""
