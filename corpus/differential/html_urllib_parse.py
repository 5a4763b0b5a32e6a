# name: html escaping and urllib.parse (no network)
import html
from urllib.parse import quote, unquote, urlencode, urlparse, parse_qs, urljoin, quote_plus
print(html.escape('<a href="x">Tom & Jerry\'s</a>'), html.unescape("&lt;p&gt; &amp; &eacute; &#x1F680;"))
print(quote("a path/with spaces?&=é"), quote_plus("a b&c"), unquote("%E6%9D%B1%E4%BA%AC"))
print(urlencode({"q": "rlm context", "page": 2, "tags": ["a", "b"]}, doseq=True))
u = urlparse("https://user@example.org:8443/docs/page.html;p?q=1&q=2&x=#frag")
print(u.scheme, u.netloc, u.hostname, u.port, u.path, u.params, u.query, u.fragment)
print(parse_qs(u.query, keep_blank_values=True), urljoin("https://a.org/x/y", "../z"))
