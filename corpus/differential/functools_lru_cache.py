# name: lru_cache and cache on recursive functions
# (Filled bottom-up so that the recursion through the C cache wrapper stays shallow: the wasm sandbox's C stack
# allows only a few dozen nested levels; hostile/recursion_through_c_functions.py covers the deep case.)
from functools import lru_cache, cache
@lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
print([fib(n) for n in range(91)][-1])
print(fib.cache_info())
@lru_cache(maxsize=2)
def square(n):
    return n * n
for n in [1, 2, 1, 3, 2, 1]:
    square(n)
print(square.cache_info())
square.cache_clear()
print(square.cache_info())
@cache
def ways(n, coins=(1, 5, 10, 25)):
    if n == 0:
        return 1
    if n < 0 or not coins:
        return 0
    return ways(n - coins[0], coins) + ways(n, coins[1:])
print([ways(n) for n in range(251)][100], ways(250))
