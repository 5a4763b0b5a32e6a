# name: functools.reduce and partial
from functools import reduce, partial
import operator
print(reduce(operator.add, range(1, 11)), reduce(operator.mul, range(1, 8), 1))
print(reduce(lambda acc, w: acc + [w.upper()], ["a", "b"], []))
print(reduce(lambda a, b: a if len(a) >= len(b) else b, "the longest word wins here".split()))
merged = reduce(lambda a, b: {**a, **b}, [{"a": 1}, {"b": 2}, {"a": 3}])
print(merged)
int_from_binary = partial(int, base=2)
print(int_from_binary("101101"), int_from_binary.keywords)
def power(base, exp):
    return base ** exp
square = partial(power, exp=2)
print([square(n) for n in range(6)])
counts = reduce(lambda acc, ch: {**acc, ch: acc.get(ch, 0) + 1}, "banana", {})
print(counts)
