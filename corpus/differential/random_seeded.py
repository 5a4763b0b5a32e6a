# name: seeded random numbers are reproducible
import random
rng = random.Random(12345)
print([rng.randint(1, 100) for _ in range(10)])
print(rng.choice(["alpha", "beta", "gamma"]), round(rng.random(), 12), rng.randrange(0, 1000, 7))
items = list(range(15))
rng.shuffle(items)
print(items)
print(rng.sample(range(100), 5), rng.choices("abc", weights=[5, 1, 1], k=8))
random.seed(7)
print(random.random(), random.getrandbits(32))
lines = context.splitlines()
print(random.Random(1).sample(lines, 2))
