# threat: grow a list of 1 MB strings until memory runs out
# expect: memory
# local: no
hog = []
while True:
    hog.append("x" * 10**6 + str(len(hog)))
