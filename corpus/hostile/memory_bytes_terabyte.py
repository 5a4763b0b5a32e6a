# threat: allocate a terabyte of bytes in one expression
# expect: memory
# local: no
data = b"x" * 10**12
print(len(data))
