#!/bin/sh
# Regenerates the seed corpora tests/fuzz/corpus/<target>/ from the data the
# unit tests already use, deterministically (same sources, same files):
#
#   fuzz_route     request targets and URLs written in tests/unit/test_route.c
#                  and test_manifest.c, and every URL in the manifest fixtures
#   fuzz_range     the Range headers (with their totals), ETags, If-Range,
#                  If-Modified-Since values and dates of tests/unit/test_range.c,
#                  as the target's '\n'-separated fields
#   fuzz_manifest  the manifests in tests/data/manifests (adu/, twin/, written/)
#                  and /work/shared/fixtures (FIXTURES=DIR to change; skipped
#                  when absent; identical files are kept once), each also in
#                  DO shape (as a parent would have rewritten it) and wrapped
#                  in a twin, plus the JSON documents written in test_manifest.c
#   fuzz_config    the config files and EDGECACHE_* variables of
#                  tests/unit/test_cfg.c, and config/edgecache.conf.example
#                  as it is and with every option uncommented
#
# Each file is named <source>-<first 12 hex of its SHA-1>. The corpus is
# committed; run this after changing those sources and commit the result.
# Needs python3.
set -eu
cd "$(dirname "$0")/../.."
FIXTURES="${FIXTURES:-/work/shared/fixtures}"
export FIXTURES

python3 - <<'PY'
import hashlib, json, os, re, shutil

OUT = "tests/fuzz/corpus"
BASE = "http://gw:8080"
LIMIT = 64 * 1024          # no seed above fuzz_manifest's max_bytes


# ---- a small C tokenizer: string literals (macros expanded), calls --------

TOKEN = re.compile(r'''
    (?P<comment>/\*.*?\*/|//[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<char>'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<punct>\S)
''', re.S | re.X)


def c_unescape(body):
    out, i = bytearray(), 0
    simple = {'n': 10, 't': 9, 'r': 13, '0': 0, '\\': 92, '"': 34, "'": 39,
              'a': 7, 'b': 8, 'f': 12, 'v': 11, '?': 63}
    while i < len(body):
        c = body[i]
        if c != '\\':
            out += c.encode()
            i += 1
            continue
        n = body[i + 1]
        if n == 'x':
            j = i + 2
            while j < len(body) and body[j] in '0123456789abcdefABCDEF':
                j += 1
            out.append(int(body[i + 2:j], 16) & 0xff)
            i = j
        elif n in '01234567':
            j = i + 1
            while j < len(body) and j < i + 4 and body[j] in '01234567':
                j += 1
            out.append(int(body[i + 1:j], 8) & 0xff)
            i = j
        else:
            out.append(simple.get(n, ord(n)))
            i += 2
    return bytes(out)


def tokens(path):
    text = open(path, encoding='utf-8').read()
    defines = {}
    for m in re.finditer(r'^#define\s+(\w+)\s+((?:"(?:[^"\\\n]|\\.)*"\s*)+)$', text, re.M):
        defines[m.group(1)] = b''.join(
            c_unescape(s[1:-1]) for s in re.findall(r'"(?:[^"\\\n]|\\.)*"', m.group(2)))
    text = re.sub(r'^#.*$', '', text, flags=re.M)
    toks = []
    for m in TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == 'comment':
            continue
        val = m.group(kind)
        if kind == 'string':
            toks.append(('str', c_unescape(val[1:-1])))
        elif kind == 'ident' and val in defines:
            toks.append(('str', defines[val]))
        else:
            toks.append((kind, val))
    # Adjacent literals are one string.
    merged = []
    for t in toks:
        if t[0] == 'str' and merged and merged[-1][0] == 'str':
            merged[-1] = ('str', merged[-1][1] + t[1])
        else:
            merged.append(t)
    return merged


def strings(path):
    return [v for k, v in tokens(path) if k == 'str']


def calls(path, names):
    """(name, [arg, ...]) for each call; an arg is bytes (a literal) or the
    text of its tokens."""
    toks, res = tokens(path), []
    for i, (k, v) in enumerate(toks):
        if k != 'ident' or v not in names or i + 1 >= len(toks) or toks[i + 1][1] != '(':
            continue
        depth, args, cur, j = 0, [], [], i + 2
        while j < len(toks):
            tk, tv = toks[j]
            if tv in ('(', '[', '{') and tk == 'punct':
                depth += 1
            elif tv in (')', ']', '}') and tk == 'punct':
                if depth == 0:
                    break
                depth -= 1
            if tk == 'punct' and tv == ',' and depth == 0:
                args.append(cur)
                cur = []
            else:
                cur.append((tk, tv))
            j += 1
        args.append(cur)
        res.append((v, [a[0][1] if len(a) == 1 and a[0][0] == 'str'
                        else ' '.join(str(t[1]) for t in a) for a in args]))
    return res


# ---- output -----------------------------------------------------------------

seeds = {}


def add(target, source, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > LIMIT:
        return
    name = '%s-%s' % (source, hashlib.sha1(data).hexdigest()[:12])
    seeds.setdefault(target, {})
    if data not in seeds[target].values():
        seeds[target][name] = data


# ---- manifests ----------------------------------------------------------------

def json_files(root):
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith('.json'):
                found.append(os.path.join(d, f))
    return sorted(found)


URL = re.compile(rb'"(https?)://([^"/?#]+)(/[^"?#]*)?(\?[^"#]*)?"')


def do_shape(doc):
    def one(m):
        host, path, query = m.group(2), m.group(3) or b'/', m.group(4)
        q = query[1:] + b'&' if query and len(query) > 1 else b''
        return b'"' + BASE.encode() + path + b'?' + q + b'cacheHostOrigin=' + host + b'"'
    return URL.sub(one, doc)


manifest_docs = []
for root in ('tests/data/manifests', os.environ['FIXTURES']):
    if not os.path.isdir(root):
        continue
    for path in json_files(root):
        data = open(path, 'rb').read()
        if data in manifest_docs:
            continue
        manifest_docs.append(data)
        stem = os.path.splitext(os.path.basename(path))[0]
        add('fuzz_manifest', stem, data)
        if URL.search(data):
            add('fuzz_manifest', stem + '.do', do_shape(data))
        try:
            tree = json.loads(data.decode('utf-8-sig'))
        except ValueError:
            continue
        if isinstance(tree, dict) and 'updateManifest' in tree:
            twin = {'deviceId': 'fuzz', 'properties': {'desired': {
                'deviceUpdate': {'__t': 'c', 'service': tree}}}}
            add('fuzz_manifest', stem + '.twin', json.dumps(twin, indent=1))
        if isinstance(tree, dict) and 'files' in tree and 'updateManifest' not in tree:
            # A detached manifest as the file a parent fetches: wrapped.
            add('fuzz_manifest', stem + '.wrapped',
                json.dumps({'updateManifest': json.dumps(tree)}))
        for u in URL.finditer(data):
            add('fuzz_route', 'fixture-url', u.group(0)[1:-1])

for s in strings('tests/unit/test_manifest.c'):
    t = s.lstrip(b'\xef\xbb\xbf \n')
    if t[:1] in (b'{', b'['):
        add('fuzz_manifest', 'test_manifest', s)
    if b'://' in s and not s.startswith(b'{'):
        add('fuzz_route', 'test_manifest', s)

# ---- route --------------------------------------------------------------------

for name, args in calls('tests/unit/test_route.c',
                        {'resolve_ok', 'resolve_fails', 'route_key_for_url', 'route_resolve'}):
    target = args[1] if name == 'route_resolve' and len(args) > 1 else args[0]
    if isinstance(target, bytes):
        add('fuzz_route', 'test_route', target)

# ---- range --------------------------------------------------------------------

SYMBOLS = {'UINT64_MAX': '18446744073709551615', 'rfc_example': '784111777',
           'etag': '"ab12"'}


def value(a):
    if isinstance(a, bytes):
        return a
    a = a.replace('ull', '').strip()
    return SYMBOLS.get(a, a).encode()


def fields(*f):
    # Fields: Range, total, ETag, If-None-Match, If-Range, If-Modified-Since,
    # Last-Modified. Trailing absent fields are left out (NULL headers).
    f = list(f)
    while f and f[-1] is None:
        f.pop()
    return b'\n'.join(b'' if x is None else x for x in f)


rng = 'tests/unit/test_range.c'
for name, args in calls(rng, {'expect_range', 'expect_result', 'http_range_peek',
                              'http_if_none_match', 'http_if_range',
                              'http_not_modified_since', 'expect_date'}):
    a = [value(x) for x in args]
    if name in ('expect_range', 'expect_result') and isinstance(args[0], bytes):
        add('fuzz_range', 'test_range', fields(a[0], a[1]))
    elif name == 'http_range_peek' and isinstance(args[0], bytes):
        add('fuzz_range', 'test_range', fields(a[0], b'1000'))
    elif name == 'http_if_none_match' and isinstance(args[0], bytes):
        add('fuzz_range', 'test_range', fields(b'', b'0', a[1], a[0]))
    elif name == 'http_if_range' and isinstance(args[0], bytes):
        add('fuzz_range', 'test_range', fields(b'', b'0', a[1], None, a[0], None, a[2]))
    elif name == 'http_not_modified_since' and isinstance(args[0], bytes):
        add('fuzz_range', 'test_range', fields(b'', b'0', None, None, None, a[0], a[1]))
    elif name == 'expect_date':
        add('fuzz_range', 'test_range', fields(b'bytes=0-99', b'100', b'"ab12"', None, a[0],
                                               a[0], value(args[1])))
# The dates a test only refuses (the `bad` list): every literal with a time.
for s in strings(rng):
    if re.search(rb'\d\d:\d\d', s):
        add('fuzz_range', 'test_range', fields(b'', b'0', None, None, None, s, b'784111777'))

# ---- config ---------------------------------------------------------------------

cfgt = 'tests/unit/test_cfg.c'
for name, args in calls(cfgt, {'write_file', 'ENV'}):
    if name == 'write_file' and len(args) == 3 and isinstance(args[2], bytes):
        add('fuzz_config', 'test_cfg-file', args[2])
    elif name == 'ENV':
        env = [a for a in args if isinstance(a, bytes) and a.startswith(b'EDGECACHE_')]
        if env:
            add('fuzz_config', 'test_cfg-env', b'\n'.join(env) + b'\n')
for name, args in calls(cfgt, {'ARGV'}):
    # "--cache-dir", "/x" and "--cache-dir=/x" as the variables they mirror.
    env, a = [], [x for x in args if isinstance(x, bytes)]
    i = 0
    while i < len(a):
        flag = a[i]
        if flag.startswith(b'--') and b'=' in flag:
            k, v = flag[2:].split(b'=', 1)
        elif flag.startswith(b'--') and i + 1 < len(a) and not a[i + 1].startswith(b'-'):
            k, v = flag[2:], a[i + 1]
            i += 1
        else:
            i += 1
            continue
        env.append(b'EDGECACHE_' + k.upper().replace(b'-', b'_') + b'=' + v)
        i += 1
    if env:
        add('fuzz_config', 'test_cfg-argv', b'\n'.join(env) + b'\n')
example = open('config/edgecache.conf.example', 'rb').read()
add('fuzz_config', 'example', example)
uncommented = re.sub(rb'^#(\w+ =)', rb'\1', example, flags=re.M)
add('fuzz_config', 'example-uncommented', uncommented)

# ---- write ------------------------------------------------------------------------

for target in ('fuzz_route', 'fuzz_range', 'fuzz_manifest', 'fuzz_config'):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in sorted(seeds.get(target, {}).items()):
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)
    total = sum(len(v) for v in seeds.get(target, {}).values())
    print('%-14s %4d seeds, %7d bytes' % (target, len(seeds.get(target, {})), total))
PY
