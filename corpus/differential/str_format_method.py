# name: str.format and format_map
print("{} + {} = {}".format(2, 3, 5))
print("{1} before {0}".format("second", "first"))
print("{name} scored {score:.1f}".format(name="Lin", score=93.456))
point = {"x": 3, "y": -4}
print("({x}, {y})".format(**point))
print("({x}, {y})".format_map(point))
print("{0[0]} {0[2]} {1.real}".format(["a", "b", "c"], 5))
print("{:>8}|{:<8}|{:^8}".format("r", "l", "c"))
print("{{literal}} {}".format("braces"))
class Missing(dict):
    def __missing__(self, key):
        return "<" + key + ">"
print("{known} and {unknown}".format_map(Missing(known="here")))
print(format(1234.5, ",.2f"), format(0.5, ".0%"), format("x", ">3"))
