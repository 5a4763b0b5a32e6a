# threat: a single C-level loop over 10**13 integers
# expect: timeout
# local: no
print(sum(range(10**13)))
