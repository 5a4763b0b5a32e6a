# threat: deep recursion through C code (a functools.cache wrapper), which exhausts the interpreter's C stack
# expect: memory
# local: yes
# note: in the wasm sandbox CPython's C stack is 512 KiB of linear memory and runs out after a few dozen levels: the instance traps (out-of-bounds access), the cell reports RecursionError and the sandbox is rebuilt. Locally the recursion limit raises RecursionError.
from functools import cache
@cache
def depth(n):
    return 0 if n == 0 else depth(n - 1) + 1
print(depth(100000))
