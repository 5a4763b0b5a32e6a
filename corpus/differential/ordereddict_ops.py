# name: OrderedDict move_to_end, popitem and an LRU cache
from collections import OrderedDict
od = OrderedDict.fromkeys("abcde", 0)
od.move_to_end("b")
print(list(od))
od.move_to_end("e", last=False)
print(list(od))
print(od.popitem(), od.popitem(last=False), list(od))
class LRU(OrderedDict):
    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity
    def get_item(self, key):
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]
    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.capacity:
            self.popitem(last=False)
cache = LRU(3)
for k in ["a", "b", "c"]:
    cache.put(k, k.upper())
cache.get_item("a")
cache.put("d", "D")
print(list(cache.items()))
print(OrderedDict(a=1, b=2) == OrderedDict(b=2, a=1), dict(a=1, b=2) == dict(b=2, a=1))
