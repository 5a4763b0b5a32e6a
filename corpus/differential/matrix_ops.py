# name: matrices as lists of lists
a = [[1, 2, 3], [4, 5, 6]]
b = [[7, 8], [9, 10], [11, 12]]
transpose = [list(row) for row in zip(*a)]
product = [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]
print(transpose)
print(product)
identity = [[int(i == j) for j in range(4)] for i in range(4)]
for row in identity:
    print(" ".join(f"{v:2d}" for v in row))
grid = [[(r * 7 + c * 3) % 10 for c in range(6)] for r in range(4)]
print([sum(r) for r in grid], [sum(c) for c in zip(*grid)], max(max(r) for r in grid))
rotated = [list(r) for r in zip(*grid[::-1])]
print(rotated[0], len(rotated), len(rotated[0]))
