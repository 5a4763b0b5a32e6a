# name: shallow vs deep copies
import copy
original = {"list": [1, [2, 3]], "tuple": (4, [5]), "name": "x"}
shallow = copy.copy(original)
deep = copy.deepcopy(original)
original["list"][1].append(99)
original["tuple"][1].append(6)
original["name"] = "changed"
print(shallow)
print(deep)
a = [1, 2]
b = [a, a]
c = copy.deepcopy(b)
print(c[0] is c[1], c[0] is a)
class Node:
    def __init__(self, value):
        self.value = value
        self.children = []
    def __repr__(self):
        return f"Node({self.value}, {self.children})"
root = Node(1)
root.children.append(Node(2))
clone = copy.deepcopy(root)
clone.children[0].value = 20
print(root, clone)
