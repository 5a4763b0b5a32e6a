# name: ChainMap layered configuration
from collections import ChainMap
defaults = {"model": "small", "temperature": 0.0, "chunks": 10}
user = {"temperature": 0.7}
cli = {"chunks": 4}
config = ChainMap(cli, user, defaults)
print(config["model"], config["temperature"], config["chunks"])
print(sorted(config.items()))
child = config.new_child({"model": "large"})
print(child["model"], config["model"], len(child))
child["extra"] = True
print(child.maps[0], "extra" in config)
print(dict(config.parents))
