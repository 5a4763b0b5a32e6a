# name: list, dict, set comprehensions and generator expressions
lines = context.splitlines()
lengths = [len(line) for line in lines if line]
print(len(lengths), max(lengths), min(lengths))
squares = {n: n * n for n in range(8)}
print(squares)
evens = sorted({n % 7 for n in range(50) if n % 2 == 0})
print(evens)
matrix = [[r * 3 + c for c in range(3)] for r in range(3)]
print(matrix, [x for row in matrix for x in row if x % 2])
print(sum(len(w) for w in "the quick brown fox".split()))
first_words = [line.split()[0] for line in lines[:40] if line.strip()]
print(first_words[:8])
inverted = {v: k for k, v in {"a": 1, "b": 2, "c": 1}.items()}
print(inverted)
print([(i, j) for i in range(3) for j in range(i)])
print(any(line.startswith("NEEDLE") for line in lines), all(len(l) < 1000 for l in lines))
