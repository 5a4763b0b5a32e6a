# name: hashlib digests of strings and of the context
import hashlib
for algo in ["md5", "sha1", "sha256", "sha512"]:
    print(algo, hashlib.new(algo, b"hello world").hexdigest())
print(hashlib.sha256(context.encode("utf-8")).hexdigest())
h = hashlib.sha256()
for i in range(0, len(context), 10000):
    h.update(context[i:i + 10000].encode("utf-8"))
print(h.hexdigest() == hashlib.sha256(context.encode()).hexdigest(), h.digest_size, h.block_size)
print(hashlib.blake2b(b"data", digest_size=16).hexdigest(), hashlib.sha3_256(b"").hexdigest())
print(hashlib.md5("naïve 東京".encode()).hexdigest())
dedup = {}
for line in context.splitlines():
    dedup.setdefault(hashlib.sha1(line.encode()).hexdigest()[:12], line)
print(len(dedup), len(context.splitlines()))
