# name: heapq push/pop, nlargest/nsmallest with keys, merge
import heapq
h = []
for x in [5, 1, 8, 3, 9, 2]:
    heapq.heappush(h, x)
print([heapq.heappop(h) for _ in range(3)], h[0])
data = [7, 2, 9, 4, 1]
heapq.heapify(data)
print(data[0], heapq.heappushpop(data, 0), heapq.heapreplace(data, 10), sorted(data))
words = context.split()
print(heapq.nlargest(5, set(words[:2000]), key=lambda w: (len(w), w)))
print(heapq.nsmallest(3, [(3, "c"), (1, "a"), (2, "b"), (1, "z")]))
print(list(heapq.merge([1, 4, 7], [2, 5, 8], [3, 6, 9])))
print(list(heapq.merge(["b", "d"], ["a", "c"], reverse=False)))
tasks = [(2, "write"), (1, "read"), (3, "review"), (1, "plan")]
heapq.heapify(tasks)
order = []
while tasks:
    order.append(heapq.heappop(tasks)[1])
print(order)
