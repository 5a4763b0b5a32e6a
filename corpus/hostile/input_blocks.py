# threat: block forever waiting on input()
# expect: error:EOFError
# local: yes
answer = input("waiting for a human: ")
