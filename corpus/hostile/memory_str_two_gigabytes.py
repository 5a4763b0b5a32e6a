# threat: allocate a 2 GB string: addressable by a 32-bit sandbox, but over its memory limit
# expect: memory
# local: no
# note: on the wasm sandbox (1 GiB limit) the allocation fails and the cell ends with MemoryError
data = "x" * (2 * 10**9)
print(len(data))
