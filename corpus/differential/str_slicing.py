# name: slicing with steps and negative indices
alphabet = "abcdefghijklmnopqrstuvwxyz"
print(alphabet[:5], alphabet[-5:], alphabet[5:10])
print(alphabet[::2])
print(alphabet[1::2])
print(alphabet[::-1])
print(alphabet[-3:-10:-2])
print(alphabet[100:], repr(alphabet[5:2]))
nums = list(range(20))
print(nums[3:17:4])
nums[2:5] = ["a", "b"]
print(nums)
del nums[::3]
print(nums)
s = slice(1, 10, 3)
print(alphabet[s], s.indices(5))
words = "alpha beta gamma delta epsilon".split()
print([w[0] for w in words], [w[-2:] for w in words])
