# threat: allocate a 10 GB string in one expression
# expect: error:MemoryError|OverflowError
# local: no
# note: on wasm32 (32-bit sizes) the length does not even fit in an index: OverflowError before any allocation
data = "x" * 10**10
print(len(data))
