# threat: one gigantic print of 10**8 characters to exhaust the output buffer
# expect: contained
# local: yes
print("x" * 10**8)
