# threat: allocate a 10 GB string in one expression
# expect: memory
# local: no
data = "x" * 10**10
print(len(data))
