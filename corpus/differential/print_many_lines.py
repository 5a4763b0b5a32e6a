# name: print thousands of short lines
for i in range(5000):
    print(i, i * i, hex(i))
print("done")
