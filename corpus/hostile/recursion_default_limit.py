# threat: unbounded recursion under the default recursion limit
# expect: error:RecursionError
# local: yes
def dive(n):
    return dive(n + 1) + 1
dive(0)
