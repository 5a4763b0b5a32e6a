# threat: look for another session's variable through sys.modules['__main__'] and every module's namespace
# expect: contained
# local: yes
import sys
target = "OTHER_SESSION_SECRET"
main = sys.modules.get("__main__")
if main is not None and target in vars(main):
    print("LEAK: found in __main__")
for name, module in list(sys.modules.items()):
    try:
        namespace = vars(module)
    except TypeError:
        continue
    if target in namespace:
        print("LEAK: found in module", name)
    for value in list(namespace.values()):
        if isinstance(value, dict) and target in value:
            print("LEAK: found in a dict held by module", name)
print("searched", len(sys.modules) > 0)
