# name: a bare trailing expression is echoed by the REPL only
# differs: the REPL echoes the repr of a trailing expression (IPython-like); plain python3 exec does not
numbers = [1, 2, 3]
print("sum printed:", sum(numbers))
sum(numbers) * 10
