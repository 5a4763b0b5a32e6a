# name: BFS shortest path and topological order
from collections import deque
from graphlib import TopologicalSorter
graph = {"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "d": ["f"], "e": ["f"], "f": []}
def bfs(start, goal):
    queue = deque([[start]])
    seen = {start}
    while queue:
        path = queue.popleft()
        if path[-1] == goal:
            return path
        for nxt in graph[path[-1]]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(path + [nxt])
print(bfs("a", "f"), bfs("c", "f"), bfs("f", "a"))
deps = {"deploy": {"test", "build"}, "test": {"build"}, "build": {"fetch"}, "fetch": set()}
ts = TopologicalSorter({k: sorted(v) for k, v in deps.items()})
print(list(ts.static_order()))
def dfs(node, seen=None):
    seen = [] if seen is None else seen
    seen.append(node)
    for nxt in graph[node]:
        if nxt not in seen:
            dfs(nxt, seen)
    return seen
print(dfs("a"))
