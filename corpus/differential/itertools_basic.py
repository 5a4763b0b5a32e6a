# name: itertools building blocks
import itertools as it
import operator
print(list(it.chain([1, 2], "ab", (3,))), list(it.chain.from_iterable([[1], [2, 3]])))
print(list(it.islice(it.count(10, 5), 4)), list(it.islice(it.cycle("xyz"), 7)))
print(list(it.accumulate([1, 2, 3, 4])), list(it.accumulate([3, 1, 4, 1, 5], max)), list(it.accumulate([1, 2, 3], operator.mul, initial=10)))
print(list(it.product("ab", range(2))), len(list(it.product(range(3), repeat=3))))
print(list(it.permutations("abc", 2)))
print(list(it.combinations(range(4), 2)), list(it.combinations_with_replacement("ab", 2)))
print(list(it.zip_longest("abc", [1], fillvalue="-")))
print(list(it.takewhile(lambda x: x < 4, [1, 3, 5, 2])), list(it.dropwhile(lambda x: x < 4, [1, 3, 5, 2])))
print(list(it.compress("abcdef", [1, 0, 1, 0, 1, 1])), list(it.filterfalse(str.isdigit, "a1b2")))
print(list(it.starmap(pow, [(2, 3), (3, 2)])), list(it.repeat("z", 3)))
print(list(it.pairwise([1, 4, 9, 16])))
a, b = it.tee(iter([1, 2, 3]))
print(list(a), list(b))
for key, group in it.groupby(sorted("mississippi")):
    print(key, len(list(group)), end="; ")
print()
