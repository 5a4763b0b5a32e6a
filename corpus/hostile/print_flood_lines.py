# threat: a loop printing 10**7 lines
# expect: timeout
# local: yes
for i in range(10**7):
    print(i)
