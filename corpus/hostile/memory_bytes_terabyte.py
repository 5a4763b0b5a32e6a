# threat: allocate a terabyte of bytes in one expression
# expect: error:MemoryError|OverflowError
# local: no
# note: on wasm32 (32-bit sizes) the length does not even fit in an index: OverflowError before any allocation
data = b"x" * 10**12
print(len(data))
