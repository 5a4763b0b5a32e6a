# name: prints some lines, then ends with an uncaught exception
totals = {}
for line in context.splitlines()[:200]:
    if "user=" in line:
        user = line.split("user=")[1].split()[0]
        totals[user] = totals.get(user, 0) + 1
print(sorted(totals.items()))
print("about to fail")
ratio = totals["alice"] / (totals["alice"] - totals["alice"])
print("never printed", ratio)
