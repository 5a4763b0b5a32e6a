# name: sorting with keys, reverse, stability and operator helpers
from operator import itemgetter, attrgetter
people = [("alice", 31, "nyc"), ("bob", 25, "sf"), ("carol", 31, "la"), ("dave", 25, "nyc"), ("erin", 40, "sf")]
print(sorted(people, key=itemgetter(1)))
print(sorted(people, key=itemgetter(1), reverse=True))
print(sorted(people, key=lambda p: (-p[1], p[0])))
print(sorted(people, key=itemgetter(2, 0)))
words = ["banana", "Apple", "cherry", "apple", "Banana", "date"]
print(sorted(words), sorted(words, key=str.lower), sorted(words, key=len))
print(sorted(words, key=lambda w: (len(w), w.lower()), reverse=True))
class Item:
    def __init__(self, name, price):
        self.name, self.price = name, price
    def __repr__(self):
        return f"Item({self.name!r}, {self.price})"
items = [Item("pen", 1.5), Item("book", 12.0), Item("cup", 1.5)]
print(sorted(items, key=attrgetter("price", "name")))
nums = [5, 2, 9, 1, 5, 6]
nums.sort(reverse=True)
print(nums, sorted("hello"), sorted({"b": 1, "a": 2}))
print(min(people, key=itemgetter(1)), max(words, key=len))
