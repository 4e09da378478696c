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
#   fuzz_hdrs      the header blocks and lines of tests/unit/test_hdrs.c (a
#                  stored block and its 304 as parts A and B, a request and
#                  its Vary names as C and D, NUL-separated)
#   fuzz_fresh     every fresh_input tests/unit/test_fresh.c evaluates (its
#                  assignments to `in` replayed up to each evaluation) and the
#                  Cache-Control values it parses, as the target's fields
#   fuzz_digest    the digest header values of tests/unit/test_hdrs.c, and the
#                  SHA-256 digests (hex, base64) written in the unit tests,
#                  each also as Repr-Digest, Digest and Content-MD5 fields
#
# Each file is named <source>-<first 12 hex of its SHA-1>. Files named
# <target>-* (fixed findings moved out of crashes/) are kept as they are.
# The corpus is committed; run this after changing those sources and commit
# the result. Needs python3.
set -eu
cd "$(dirname "$0")/../.."
FIXTURES="${FIXTURES:-/work/shared/fixtures}"
export FIXTURES

python3 - <<'PY'
import hashlib, json, os, re

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

# ---- hdrs ---------------------------------------------------------------------

def hdrs_seed(a=b'', b=b'', c=b'', d=b''):
    parts = [a, b, c, d]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return b'\0'.join(parts)


def vary_of(names):
    return b'Vary: ' + names.replace(b',', b', ') + b'\r\n' if names else b''


hd = 'tests/unit/test_hdrs.c'
group, stored = [], None
for name, args in calls(hd, {'hdrs_init', 'add_line', 'hdrs_add_str', 'from_block',
                             'assert_vary', 'assert_key', 'assert_same_key'}):
    lits = [a for a in args if isinstance(a, bytes)]
    if name == 'hdrs_init':
        if group:
            add('fuzz_hdrs', 'test_hdrs', hdrs_seed(b''.join(group)))
        group = []
    elif name == 'add_line' and lits:
        group.append(lits[0])
    elif name == 'hdrs_add_str' and len(lits) == 2:
        group.append(lits[0] + b': ' + lits[1] + b'\r\n')
    elif name == 'from_block' and lits:
        add('fuzz_hdrs', 'test_hdrs', hdrs_seed(lits[0]))
        if args[0].replace(' ', '') == '&stored':
            stored = lits[0]
        elif args[0].replace(' ', '') == '&newer' and stored is not None:
            add('fuzz_hdrs', 'test_hdrs', hdrs_seed(stored, lits[0]))
    elif name == 'assert_vary' and lits:
        add('fuzz_hdrs', 'test_hdrs', hdrs_seed(lits[0]))
    elif name == 'assert_key' and len(args) >= 2 and isinstance(args[0], bytes) \
            and isinstance(args[1], bytes):
        add('fuzz_hdrs', 'test_hdrs', hdrs_seed(vary_of(args[1]), b'', args[0], args[1]))
    elif name == 'assert_same_key' and len(args) >= 3 and isinstance(args[2], bytes):
        for req in args[:2]:
            if isinstance(req, bytes):
                add('fuzz_hdrs', 'test_hdrs', hdrs_seed(vary_of(args[2]), b'', req, args[2]))
if group:
    add('fuzz_hdrs', 'test_hdrs', hdrs_seed(b''.join(group)))

# ---- fresh --------------------------------------------------------------------

import email.utils

NOW = 1700000000
FRESH_CONST = {'NOW': NOW, 'HEURISTIC_MAX': 300}
STATUSES = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501,
            201, 202, 302, 303, 307, 400, 403, 500, 502, 503, 206]


def number_of(text):
    """The value of a small integer expression of the test (NOW - 1000), or None."""
    if isinstance(text, bytes):
        return None
    t = text.replace('ull', '').replace('ll', '')
    for k, v in FRESH_CONST.items():
        t = re.sub(r'\b%s\b' % k, str(v), t)
    if not re.fullmatch(r'[0-9 +\-*()]+', t):
        return None
    return int(eval(t))


def value_of(arg):
    """A string field of fresh_input: bytes, None (NULL) or a date_at()."""
    if isinstance(arg, bytes):
        return arg
    m = re.fullmatch(r'date_at \( (.*) \)', arg.strip())
    if m and number_of(m.group(1)) is not None:
        return email.utils.formatdate(NOW + number_of(m.group(1)), usegmt=True).encode()
    return None


def fresh_state(cc=None):
    return {'status': 200, 'cc': cc, 'expires': None, 'date': value_of('date_at ( 0 )'),
            'age': None, 'lm': 0, 'req': NOW, 'resp': NOW, 'hmax': 300, 'flags': '',
            'rule': ''}


RULES = {'FRESH_RULE_IMMUTABLE': 'immutable', 'FRESH_RULE_REVALIDATE': 'revalidate',
         'FRESH_RULE_NONE': ''}


def fresh_seed(st):
    f = [str(st['status']).encode(), st['cc'] or b'', st['expires'] or b'',
         st['date'] or b'', st['age'] or b'', str(st['lm']).encode(),
         str(st['req']).encode(), str(st['resp']).encode(), str(st['hmax']).encode(),
         st['flags'].encode(), st['rule'].encode()]
    while f and not f[-1]:
        f.pop()
    add('fuzz_fresh', 'test_fresh', b'\n'.join(f))


FIELDS = {'status': 'status', 'cache_control': 'cc', 'expires': 'expires', 'date': 'date',
          'age': 'age', 'last_modified': 'lm', 'request_time': 'req',
          'response_time': 'resp', 'heuristic_max_age': 'hmax'}
fr = 'tests/unit/test_fresh.c'
toks = tokens(fr)
state = fresh_state()
for name, args in calls(fr, {'fresh_parse'}):
    if args and isinstance(args[0], bytes):
        fresh_seed(fresh_state(args[0]))
i = 0
while i < len(toks):
    k, v = toks[i]
    nxt = toks[i + 1][1] if i + 1 < len(toks) else None
    if k == 'ident' and nxt == '(' and v in ('input', 'with_rule', 'eval_cc', 'eval_status',
                                            'eval_full', 'evaluate'):
        call = calls_at = None
        # the arguments of this one call
        depth, j, cur, args = 0, i + 2, [], []
        while j < len(toks):
            tk, tv = toks[j]
            if tk == 'punct' and tv in '([{':
                depth += 1
            elif tk == 'punct' and tv in ')]}':
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
        args = [a[0][1] if len(a) == 1 and a[0][0] == 'str'
                else ' '.join(str(t[1]) for t in a) for a in args]
        if v == 'input' and args:
            state = fresh_state(value_of(args[0]))
        elif v == 'with_rule' and len(args) == 4:
            state = fresh_state(value_of(args[0]))
            rule = args[1].strip()
            lo, hi = number_of(args[2]), number_of(args[3])
            state['rule'] = RULES.get(rule, '%d..%d' % (lo or 0, hi or 0))
        elif v == 'eval_cc' and args:
            fresh_seed(fresh_state(value_of(args[0])))
        elif v == 'eval_status' and len(args) == 2:
            st = number_of(args[0])
            for s_ in ([st] if st is not None else STATUSES):
                one = fresh_state(value_of(args[1]))
                one['status'] = s_
                fresh_seed(one)
        elif v == 'eval_full' and len(args) == 3:
            one = fresh_state(value_of(args[0]))
            one['expires'] = value_of(args[1])
            one['lm'] = number_of(args[2]) or 0
            fresh_seed(one)
        elif v == 'evaluate' and args and args[0].replace(' ', '') == '&in':
            fresh_seed(state)
        i = j
        continue
    # in.FIELD = VALUE;  in.policy.rule = RULE;  in.policy.min_s = N;
    if k == 'ident' and v == 'in' and nxt == '.':
        path, j = [], i + 1
        while j + 1 < len(toks) and toks[j][1] == '.':
            path.append(toks[j + 1][1])
            j += 2
        if j < len(toks) and toks[j][1] == '=':
            end = j + 1
            while end < len(toks) and toks[end][1] != ';':
                end += 1
            val = toks[j + 1:end]
            text = val[0][1] if len(val) == 1 and val[0][0] == 'str' \
                else ' '.join(str(t[1]) for t in val)
            key = '.'.join(path)
            if key in FIELDS:
                f = FIELDS[key]
                if f in ('cc', 'expires', 'date', 'age'):
                    state[f] = value_of(text)
                elif number_of(text) is not None:
                    state[f] = number_of(text)
            elif key in ('request_authorized', 'immutable'):
                flag = 'a' if key == 'request_authorized' else 'i'
                state['flags'] = state['flags'].replace(flag, '')
                if number_of(text):
                    state['flags'] += flag
            elif key == 'policy.rule':
                state['rule'] = RULES.get(text.strip(), '0..0')
            i = end
            continue
    i += 1

# ---- digest -------------------------------------------------------------------

import base64
import binascii


def digest_seed(repr_=b'', dig=b'', md5=b'', hex_=b'', b64=b''):
    f = [repr_, dig, md5, hex_, b64]
    while f and not f[-1]:
        f.pop()
    add('fuzz_digest', 'test_digest', b'\n'.join(f))


for s in strings(hd):
    for line in s.split(b'\r\n'):
        n, _, v = line.partition(b':')
        v = v.strip()
        ln = n.strip().lower()
        if ln == b'repr-digest':
            digest_seed(repr_=v)
        elif ln == b'digest':
            digest_seed(dig=v)
        elif ln in (b'content-md5', b'x-ms-blob-content-md5'):
            digest_seed(md5=v)
digests = set()
for src in sorted(os.listdir('tests/unit')):
    if not src.endswith('.c'):
        continue
    for s in strings(os.path.join('tests/unit', src)):
        if re.fullmatch(rb'[0-9a-fA-F]{64}', s):
            digests.add(binascii.unhexlify(s))
        elif re.fullmatch(rb'[A-Za-z0-9+/]{43}=', s):
            digests.add(base64.b64decode(s))
for d in sorted(digests):
    b64 = base64.b64encode(d)
    md5 = base64.b64encode(d[:16])
    digest_seed(b'sha-256=:' + b64 + b':', b'SHA-256=' + b64, md5, binascii.hexlify(d), b64)
    digest_seed(b'sha-512=:' + base64.b64encode(d + d) + b':, sha-256=:' + b64 + b':',
                b'md5=' + md5 + b',SHA-256=' + b64, md5)

# ---- write ------------------------------------------------------------------------

TARGETS = ('fuzz_route', 'fuzz_range', 'fuzz_manifest', 'fuzz_config', 'fuzz_hdrs',
           'fuzz_fresh', 'fuzz_digest')
for target in TARGETS:
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):          # regenerated, but for the fixed findings
        if not name.startswith(target + '-'):
            os.remove(os.path.join(d, name))
    for name, data in sorted(seeds.get(target, {}).items()):
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)
    total = sum(len(v) for v in seeds.get(target, {}).values())
    print('%-14s %4d seeds, %7d bytes' % (target, len(seeds.get(target, {})), total))
PY
