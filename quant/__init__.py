"""Joint sparsification + GPTQ 4-bit that keeps pruned zeros, packed in the GPTQ checkpoint format.

Not built yet: issue #4 fills this package (gptq.py, pack.py, rtn.py).
"""
