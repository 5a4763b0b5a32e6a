# threat: raise the recursion limit to a million, then recurse until the stack runs out
# expect: memory
# local: no
# note: `memory` accepts MemoryError, RecursionError or an executor failure (a stack-overflow trap)
import sys
sys.setrecursionlimit(10**6)
def dive(n):
    return dive(n + 1) + 1
dive(0)
