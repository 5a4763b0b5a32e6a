# name: operator helpers with map and sorted
import operator
from functools import reduce
pairs = [(1, "b"), (2, "a"), (1, "a")]
print(sorted(pairs, key=operator.itemgetter(1, 0)))
print(list(map(operator.mul, [1, 2, 3], [4, 5, 6])), reduce(operator.xor, [1, 2, 4, 8]))
print(operator.methodcaller("split", ",")("a,b,c"), operator.attrgetter("real")(3 + 4j))
print(operator.contains([1, 2], 2), operator.neg(5), operator.truediv(7, 2), operator.floordiv(7, 2))
d = {"a": 1}
operator.setitem(d, "b", 2)
print(d, operator.getitem(d, "b"), operator.index(7), operator.concat("ab", "cd"))
print(list(map(operator.itemgetter(0), ["xy", "zw"])), operator.lt(1, 2), operator.is_(None, None))
