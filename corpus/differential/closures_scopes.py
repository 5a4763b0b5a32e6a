# name: closures, nonlocal, global and late binding
def make_counter():
    count = 0
    def increment(step=1):
        nonlocal count
        count += step
        return count
    return increment
c = make_counter()
print(c(), c(), c(10))
total = 0
def add_to_total(x):
    global total
    total += x
for x in range(5):
    add_to_total(x)
print(total)
late = [lambda: i for i in range(3)]
early = [lambda i=i: i for i in range(3)]
print([f() for f in late], [f() for f in early])
def outer():
    x = "outer"
    def inner():
        return x
    x = "changed"
    return inner()
print(outer())
print(make_counter.__name__, c.__closure__[0].cell_contents)
