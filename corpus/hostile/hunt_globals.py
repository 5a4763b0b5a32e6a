# threat: look for another session's variable in this session's globals() and builtins
# expect: contained
# local: yes
target = "OTHER_SESSION_SECRET"
if target in globals():
    print("LEAK: found in globals()")
table = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
if target in table:
    print("LEAK: found in builtins")
for value in list(globals().values()):
    if isinstance(value, dict) and target in value:
        print("LEAK: found in a dict held by a global")
print("searched globals")
