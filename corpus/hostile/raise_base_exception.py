# threat: raise a bare BaseException that ordinary handlers do not catch
# expect: error:BaseException
# local: yes
raise BaseException("bare")
