# The moto launcher (devhost/src/moto.rs runs it with the virtualenv's python): moto's
# own server entry point, served one DynamoDB request at a time through waitress, with
# three sets of patches to moto's internals, applied only to the moto version they were
# written for (PATCHED_FOR):
#   - speed: moto's query, item, (de)serialisation hot paths, same answers faster;
#   - strictness: the local DynamoDB enforces what DynamoDB enforces — partition
#     throughput per key value on the table and every GSI, fault knobs (transaction
#     conflicts, throttles) and delayed GSI visibility;
#   - SQS: one receive at a time takes messages, so no message goes to two receivers;
#     a delete no longer drops a message sent meanwhile; visible messages and deletes
#     found without walking every message twice.
#
# Knobs (environment, read once at start):
#   CONDUIT_MOTO_PATCHES=0          serve moto unpatched (the patch comparison test)
#   CONDUIT_DDB_PARTITION_LIMITS=0  count capacity but never throttle (default: enforce)
#   CONDUIT_DDB_FAULTS=conflict:0.1,throttle:0.05   shares of injected faults
#   CONDUIT_DDB_FAULT_SEED=7        seed of the fault draws (default 1)
#   CONDUIT_DDB_GSI_DELAY_MS=500    a GSI query sees no item version younger than this
#
# GET /_conduit/ddb/capacity[?top=N] answers the hottest-key report as JSON;
# DELETE /_conduit/ddb/capacity starts counting afresh.
import sys, os, json, math, random, threading, time, copy
import moto
import moto.server as server

PATCHED_FOR = "5.2.5"


def flag(name, default):
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "off", "no", "")


def parse_faults(text):
    shares = {"conflict": 0.0, "throttle": 0.0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition(":")
        if name not in shares:
            sys.exit(f"CONDUIT_DDB_FAULTS: unknown fault {name!r} (conflict, throttle)")
        try:
            shares[name] = float(share)
        except ValueError:
            sys.exit(f"CONDUIT_DDB_FAULTS: {part!r} is not fault:share")
        if not 0.0 <= shares[name] <= 1.0:
            sys.exit(f"CONDUIT_DDB_FAULTS: the share of {name} must be within 0..1")
    if shares["conflict"] + shares["throttle"] > 1.0:
        sys.exit("CONDUIT_DDB_FAULTS: the shares add up to more than 1")
    return shares


PATCHED = flag("CONDUIT_MOTO_PATCHES", "1")
if PATCHED and moto.__version__ != PATCHED_FOR:
    banner = "!" * 78
    sys.stderr.write(
        f"{banner}\nWARNING: moto {moto.__version__} is not moto {PATCHED_FOR}, the version the "
        "launcher's patches were written for.\nServing moto UNPATCHED: slower, and with NO "
        "partition limits, fault knobs or GSI delay.\nPin moto in infra/requirements.txt or "
        f"port the patches (devhost/src/moto_launcher.py).\n{banner}\n")
    PATCHED = False
LIMITS = PATCHED and flag("CONDUIT_DDB_PARTITION_LIMITS", "1")
FAULTS = parse_faults(os.environ.get("CONDUIT_DDB_FAULTS", ""))
try:
    FAULT_SEED = int(os.environ.get("CONDUIT_DDB_FAULT_SEED", "1"))
    GSI_DELAY = int(os.environ.get("CONDUIT_DDB_GSI_DELAY_MS", "0")) / 1000.0
except ValueError:
    sys.exit("CONDUIT_DDB_FAULT_SEED and CONDUIT_DDB_GSI_DELAY_MS take integers")
if not PATCHED and (any(FAULTS.values()) or GSI_DELAY):
    sys.stderr.write("WARNING: moto unpatched: CONDUIT_DDB_FAULTS and CONDUIT_DDB_GSI_DELAY_MS are ignored\n")

dynamodb = threading.Lock()
run_simple = server.run_simple
# What the DynamoDB request being served is (the operation, its read consistency, the
# items a batch write could not process): one at a time under the lock, so a global.
class Request(threading.local):
    op = None
    consistent = False
    unprocessed = None


request = Request()

# Python's full collections walk every tracked object, and moto keeps every stored
# item as a few dozen of them: with 100,000 records a full collection stopped moto for
# hundreds of milliseconds, longer as the tables grew. What survived a full collection
# is long-lived (stored items, mostly acyclic, freed by reference counting when they
# are replaced or deleted): freeze it, so later full collections see only what is new.
import gc
full_collection = threading.Event()

def collected(phase, info):
    if phase == "stop" and info.get("generation") == 2:
        full_collection.set()

gc.callbacks.append(collected)

CAPACITY_PATH = "/_conduit/ddb/capacity"

def capacity_endpoint(environ, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    with dynamodb:
        if method == "DELETE":
            capacity.reset()
            body = {"reset": True}
        elif method == "GET":
            top = 20
            for pair in environ.get("QUERY_STRING", "").split("&"):
                name, _, value = pair.partition("=")
                if name == "top" and value.isdigit():
                    top = int(value)
            body = capacity.report(top)
        else:
            start_response("405 Method Not Allowed", [("Content-Type", "application/json")])
            return [b'{"error":"GET or DELETE"}']
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]

def serialised(app):
    def serve(environ, start_response):
        if full_collection.is_set():
            full_collection.clear()
            gc.freeze()
        if environ.get("PATH_INFO") == CAPACITY_PATH:
            return capacity_endpoint(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            with counting:
                requests[target] = requests.get(target, 0) + 1
        if not target.startswith("DynamoDB_"):
            return app(environ, start_response)
        with dynamodb:
            request.op = target.partition(".")[2]
            request.consistent = False
            request.unprocessed = None
            try:
                result = app(environ, start_response)
                try:
                    return [b"".join(result)]
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            finally:
                request.op = None
    return serve

# werkzeug's development server answers every request on a new connection and a new
# thread ("Connection: close"), then waits up to 10 ms for stray bytes: a third of
# moto's time under a sync's load went there. waitress (a production WSGI server, in
# the project's requirements) keeps connections alive and serves them from a pool; a
# thread may wait out an SQS long poll, so the pool is large.
#
# AWS endpoints take every connection a client opens; waitress stops accepting past
# its connection_limit, and the SDK's pool keeps its connections open while idle, so a
# limit of 1,000 once left a worker's requests past the thousandth unaccepted until
# its Lambda timeout — a hang AWS would never cause. The limit is what this process
# may hold open (the dev host refuses an invocation past Lambda's 1,024 descriptors
# itself, devhost/src/trace.rs).
def connection_limit():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    except (ImportError, ValueError, OSError):
        return 1000
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(1000, min(soft, 65536) - 256)


def serve(host, port, app, **kw):
    try:
        import waitress
    except ImportError:
        return run_simple(host, port, serialised(app), **kw)
    waitress.serve(serialised(app), host=host, port=port, threads=64,
                   connection_limit=connection_limit(), backlog=2048, channel_timeout=600,
                   asyncore_use_poll=True, _quiet=True)

server.run_simple = serve


# ---------------------------------------------------------------------------------------
# Capacity accounting: consumed units per partition-key value per second, on the table
# and on every GSI (whose partition key is its own key attribute).
#
# Units as DynamoDB computes them: a write costs ceil(size / 1 KB) of the larger of
# the item before and after (a delete: the item deleted; at least 1); each GSI the
# write touches costs ceil(projected size / 1 KB) per index write — one put when the
# item enters the index, one delete when it leaves, a delete and a put (two writes) when
# its index key changes, one put when a projected attribute changes, nothing otherwise.
# A read costs ceil(size / 4 KB) (at least 1), half when eventually consistent; a
# Query sums the sizes of the items it returns before rounding. Transactions cost
# double. Item size is DynamoDB's: attribute names plus values (strings and binaries
# by their bytes, numbers by (significant digits + 1) / 2 + 1, booleans and nulls 1,
# lists and maps 3 plus 1 per element, sets the sum of their members).
#
# Admission (what DynamoDB promises per partition, nothing more): a window is one
# calendar second; a write is refused when any key it touches would pass 1,000 WCU in
# the window; a read when its key has already consumed 3,000 RCU in the window (its
# own size is known only once read). No burst capacity, no split-for-heat: DynamoDB
# promises neither for a single key value. Refused writes are undone and consume
# nothing; a Scan is counted on every key it reads but never refused.
# ---------------------------------------------------------------------------------------
WCU_LIMIT = 1000.0
RCU_LIMIT = 3000.0


class KeyCapacity:
    """One key value's counters: the current window and the run's peaks."""
    __slots__ = ("window", "wcu", "rcu", "demand", "peak_wcu", "peak_rcu", "peak_demand",
                 "total_wcu", "total_rcu", "throttles", "over_windows", "last_over")

    def __init__(self):
        self.window = -1
        self.wcu = self.rcu = self.demand = 0.0
        self.peak_wcu = self.peak_rcu = self.peak_demand = 0.0
        self.total_wcu = self.total_rcu = 0.0
        self.throttles = 0
        self.over_windows = 0
        self.last_over = -1

    def roll(self, window):
        if window != self.window:
            self.window = window
            self.wcu = self.rcu = self.demand = 0.0

    def mark_over(self):
        if self.last_over != self.window:
            self.last_over = self.window
            self.over_windows += 1


class Capacity:
    """Every key value's counters, the admission decision and the report."""

    def __init__(self):
        self.keys = {}

    def reset(self):
        self.keys = {}
        requests.clear()

    def entry(self, key):
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = KeyCapacity()
        return found

    def admit_writes(self, charges, force=False):
        """Charges `charges` ([(key, units)]) if every key has room (or `force`); else
        the first key over its limit (nothing charged)."""
        window = int(time.time())
        entries = []
        for key, units in charges:
            entry = self.entry(key)
            entry.roll(window)
            entry.demand += units
            entry.peak_demand = max(entry.peak_demand, entry.demand)
            entries.append((entry, units))
        # Every key over its limit is marked (and counts the refusal), not only the
        # first, so the report names each partition a write would have overrun.
        over = [(key, entry) for (key, _), (entry, units) in zip(charges, entries)
                if entry.wcu + units > WCU_LIMIT]
        for _, entry in over:
            entry.mark_over()
        if over and LIMITS and not force:
            for _, entry in over:
                entry.throttles += 1
            return over[0][0]
        for entry, units in entries:
            entry.wcu += units
            entry.total_wcu += units
            entry.peak_wcu = max(entry.peak_wcu, entry.wcu)
        return None

    def read_room(self, key):
        """Whether `key` may still be read in this window."""
        entry = self.entry(key)
        entry.roll(int(time.time()))
        if entry.rcu >= RCU_LIMIT:
            entry.mark_over()
            if LIMITS:
                entry.throttles += 1
                return False
        return True

    def charge_reads(self, key, units):
        entry = self.entry(key)
        entry.roll(int(time.time()))
        entry.rcu += units
        entry.total_rcu += units
        entry.peak_rcu = max(entry.peak_rcu, entry.rcu)
        if entry.rcu > RCU_LIMIT:
            entry.mark_over()

    def report(self, top):
        def load(item):
            _, e = item
            return (max(e.peak_demand / WCU_LIMIT, e.peak_rcu / RCU_LIMIT), e.throttles)
        ranked = sorted(self.keys.items(), key=load, reverse=True)
        over = [k for k, e in self.keys.items() if e.over_windows]
        return {
            "moto_version": moto.__version__,
            "patched": PATCHED,
            "limits_enforced": LIMITS,
            "wcu_limit": WCU_LIMIT,
            "rcu_limit": RCU_LIMIT,
            "faults": FAULTS,
            "fault_seed": FAULT_SEED,
            "faults_injected": dict(injected),
            "requests": dict(requests),
            "gsi_delay_ms": int(GSI_DELAY * 1000),
            "key_count": len(self.keys),
            "keys_over_limit": len(over),
            "exceeded": bool(over),
            "keys": [{
                "table": table,
                "index": index,
                "key": value,
                "peak_wcu": e.peak_wcu,
                "peak_wcu_demand": e.peak_demand,
                "peak_rcu": e.peak_rcu,
                "total_wcu": e.total_wcu,
                "total_rcu": e.total_rcu,
                "seconds_over": e.over_windows,
                "throttles": e.throttles,
            } for (table, index, value), e in ranked[:top]],
        }


capacity = Capacity()
# Faults answered so far, by kind (the report shows that a knob did act).
injected = {"conflict": 0, "throttle": 0}
# Requests served, by X-Amz-Target (DynamoDB_20120810.GetItem, TrentService.Decrypt,
# AmazonSQS.SendMessage, ...): what a bench divides by its work for the calls per unit.
requests = {}
counting = threading.Lock()


if PATCHED:
    # moto answers a table query by sorting every item of the table (all partitions, with
    # Python-level comparisons), then skipping to the start key item by item: a 100-item
    # page of a 100,000-item partition took seconds. A query of the table itself (not an
    # index) only needs its own partition, in key order from the start key on, and (with
    # no key condition or filter to skip items) one item past the limit: hand moto's own
    # query just those. Same answers, in the time of the page.
    from bisect import bisect_left, bisect_right
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.models.dynamo_type import DynamoType

    query = Table.query

    def sort_key(key):
        # cast_value, without its chain of type tests for the usual string keys.
        return key.value if key.type == "S" else key.cast_value

    # A partition's range keys in order, kept per table until a key is added to it or
    # removed from it (a write that replaces an item keeps its key). Outside the table, so
    # a transaction's copy of the tables does not copy it.
    import weakref
    sorted_cache = weakref.WeakKeyDictionary()

    def sorted_keys(table, hash_key, part):
        cache = sorted_cache.setdefault(table, {})
        entry = cache.get(hash_key)
        if entry is None:
            pairs = sorted(((sort_key(r), r) for r in part), key=lambda p: p[0])
            entry = ([k for k, _ in pairs], [r for _, r in pairs])
            cache[hash_key] = entry
        return entry

    put_item = Table.put_item
    delete_item = Table.delete_item

    def keyed_put_item(self, item_attrs, *args, **kwargs):
        cache = sorted_cache.get(self)
        if cache and self.range_key_attr:
            hash_value = DynamoType(item_attrs.get(self.hash_key_attr))
            part = self.items.get(hash_value)
            range_attr = item_attrs.get(self.range_key_attr)
            if part is None or range_attr is None or DynamoType(range_attr) not in part:
                cache.pop(hash_value, None)
        return put_item(self, item_attrs, *args, **kwargs)

    def keyed_delete_item(self, hash_key, range_key):
        cache = sorted_cache.get(self)
        if cache:
            cache.pop(hash_key, None)
        return delete_item(self, hash_key, range_key)

    Table.put_item = keyed_put_item
    Table.delete_item = keyed_delete_item

    def partition_query(self, hash_key, range_comparison, range_objs, limit,
                        exclusive_start_key, scan_index_forward, projection_expressions,
                        index_name=None, *args, **kwargs):
        if index_name or hash_key is None or not self.range_key_attr:
            return query(self, hash_key, range_comparison, range_objs, limit,
                         exclusive_start_key, scan_index_forward, projection_expressions,
                         index_name, *args, **kwargs)
        part = self.items.get(hash_key)
        keys, ranges = sorted_keys(self, hash_key, part) if part else ([], [])
        start = (exclusive_start_key or {}).get(self.range_key_attr)
        lo, hi = 0, len(keys)
        if start is not None:
            start = sort_key(DynamoType(start))
            if scan_index_forward is False:
                hi = bisect_left(keys, start)
            else:
                lo = bisect_right(keys, start)
        # Legacy QueryFilter conditions (moto's filter_kwargs) append items their own way.
        filtered = any(k not in ("hash_key_conditions", "range_key_conditions") for k in kwargs)
        sought = not filtered
        if range_comparison and sought:
            found = seek(keys, range_comparison, range_objs, lo, hi)
            sought = found is not None
            if sought:
                # Plus the first key past the condition in the walk's direction: moto
                # meets it with `limit` items in hand and answers a LastEvaluatedKey.
                first, end = found
                if scan_index_forward is False:
                    lo, hi = max(lo, first - 1), end
                else:
                    lo, hi = first, min(len(keys), end + 1)
        if sought and limit:
            # Every key in [lo, hi) meets the key condition, so moto stops after `limit`
            # of them (a filter expression applies after the limit, as in DynamoDB).
            if scan_index_forward is False:
                lo = max(lo, hi - (limit + 1))
            else:
                hi = min(hi, lo + limit + 1)
        items = [part[r] for r in ranges[lo:hi]]
        self.all_items = lambda: items
        try:
            return query(self, hash_key, range_comparison, range_objs, limit,
                         None, scan_index_forward, projection_expressions,
                         index_name, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = partition_query

    def seek(keys, comparison, values, lo, hi):
        """The part [lo, hi) of the sorted `keys[lo:hi]` that meets a key condition on the
        range key (moto's comparison and values), or None when it cannot be sought: then
        moto's own walk decides. DynamoDB seeks to a key condition; moto compared every
        item of the partition (and summed its size), so a query of a 6,250-item shard
        with `sk > :after` cost the whole shard for a page of 32."""
        if not keys or not all(v.type == "S" for v in values) or type(keys[0]) is not str:
            return None
        try:
            vals = [v.value for v in values]
            if comparison in ("=", "EQ") and len(vals) == 1:
                return bisect_left(keys, vals[0], lo, hi), bisect_right(keys, vals[0], lo, hi)
            if comparison in (">", "GT") and len(vals) == 1:
                return bisect_right(keys, vals[0], lo, hi), hi
            if comparison in (">=", "GE") and len(vals) == 1:
                return bisect_left(keys, vals[0], lo, hi), hi
            if comparison in ("<", "LT") and len(vals) == 1:
                return lo, bisect_left(keys, vals[0], lo, hi)
            if comparison in ("<=", "LE") and len(vals) == 1:
                return lo, bisect_right(keys, vals[0], lo, hi)
            if comparison == "BETWEEN" and len(vals) == 2:
                first = bisect_left(keys, vals[0], lo, hi)
                return first, max(first, bisect_right(keys, vals[1], lo, hi))
            if comparison == "BEGINS_WITH" and len(vals) == 1:
                prefix = vals[0]
                first = bisect_left(keys, prefix, lo, hi)
                # Keys from `prefix` on start with it up to the first that does not.
                return first, bisect_left(keys, True, first, hi,
                                          key=lambda k: not k.startswith(prefix))
        except TypeError:
            # Keys of mixed types: moto's walk decides.
            return None
        return None

    # A new item checked its size attribute by attribute, summing every attribute so far
    # each time (quadratic in the attributes): the same check with a running total.
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type

    def item_init(self, hash_key, range_key, attrs):
        self.hash_key = hash_key
        self.range_key = range_key
        self.attrs = dynamo_type.LimitedSizeDict()
        total = 0
        for key, value in attrs.items():
            value = dynamo_type.DynamoType(value)
            total += dynamo_type.bytesize(key) + value.size()
            if total > 405000:
                raise ItemSizeTooLarge
            dict.__setitem__(self.attrs, key, value)

    dynamo_type.Item.__init__ = item_init

    # moto serialises every attribute value of an answer through the service model, looking
    # up each of AttributeValue's ten members by several spellings: most of a query's time.
    # A value of one scalar member is already in wire form: copy it.
    from moto.core.serialize import BaseJSONSerializer

    serialize_structure = BaseJSONSerializer._serialize_type_structure
    SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}

    def fast_structure(self, serialized, value, shape, key):
        if key and shape.name == "AttributeValue" and type(value) is dict and len(value) == 1:
            ((kind, scalar),) = value.items()
            if type(scalar) is SCALARS.get(kind, type(None)) and (kind != "NULL" or scalar):
                self._default_serialize(serialized, {kind: scalar}, shape, key)
                return
        serialize_structure(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = fast_structure

    # The same on the way in: the request parser walks the service model for every
    # attribute value of every item; a value of one scalar member parses to itself. And
    # answers convert each stored value to a dict recursively; a scalar one is one dict.
    from moto.core.parse import BaseJSONParser
    from moto.dynamodb import responses as dynamodb_responses
    from moto.dynamodb.models import utilities as dynamodb_utilities

    parse_structure = BaseJSONParser._parse_structure

    def fast_parse_structure(self, shape, value):
        if shape.name == "AttributeValue" and type(value) is dict and len(value) == 1:
            ((kind, scalar),) = value.items()
            if type(scalar) is SCALARS.get(kind, type(None)):
                return {kind: scalar}
        return parse_structure(self, shape, value)

    BaseJSONParser._parse_structure = fast_parse_structure

    to_dict = dynamodb_utilities.dynamo_to_dict
    SCALAR_KINDS = frozenset(SCALARS)

    def fast_to_dict(obj):
        kind = type(obj)
        if kind is DynamoType:
            if obj.type in SCALAR_KINDS:
                return {obj.type: obj.value}
            return to_dict(obj)
        if kind is dict:
            return {k: fast_to_dict(v) for k, v in obj.items()}
        if kind is list:
            return [fast_to_dict(v) for v in obj]
        if kind is str or kind is int or kind is bool or obj is None:
            return obj
        return to_dict(obj)

    dynamodb_utilities.dynamo_to_dict = fast_to_dict
    dynamodb_responses.dynamo_to_dict = fast_to_dict

    # Per request, moto lists its own package directory to find the backend: list it once.
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)

    # -----------------------------------------------------------------------------------
    # Strictness: partition throughput, faults, GSI delay (see the accounting notes above).
    # -----------------------------------------------------------------------------------
    import base64
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.exceptions import DynamodbException, TransactionCanceledException
    from moto.dynamodb.responses import DynamoHandler

    PTEE = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
    PTEE_MESSAGE = ("The level of configured provisioned throughput for the table was "
                    "exceeded. Consider increasing your provisioning level with the "
                    "UpdateTable API.")
    TX_THROTTLE_MESSAGE = ("Throughput exceeds the current capacity of your table or index. "
                           "DynamoDB is automatically scaling your table or index so please "
                           "try again shortly. If exceptions persist, check if you have a hot "
                           "key: https://docs.aws.amazon.com/amazondynamodb/latest/"
                           "developerguide/bp-partition-key-design.html")
    CONFLICT_MESSAGE = "Transaction is ongoing for the item"
    READ_OPS = frozenset(("GetItem", "BatchGetItem", "TransactGetItems", "Query", "Scan"))
    PLAIN_WRITE_OPS = frozenset(("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"))

    class ProvisionedThroughputExceeded(DynamodbException):
        """DynamoDB's answer to a request over a partition's limit (or an injected one):
        HTTP 400, with the throttling reason and the resource it names."""

        def __init__(self, reason, resource):
            super().__init__(PTEE, PTEE_MESSAGE)
            self.description = json.dumps({
                "__type": PTEE,
                "message": PTEE_MESSAGE,
                "ThrottlingReasons": [{"reason": reason, "resource": resource}],
            })

    class ThrottlingError(Exception):
        """A transaction item over its partition's limit: moto's transaction turns it
        into the cancellation reason named after this class."""

        def __str__(self):
            return TX_THROTTLE_MESSAGE

    def number_size(text):
        digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
        return (max(len(digits), 1) + 1) // 2 + 1

    def binary_size(value):
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        try:
            return len(base64.b64decode(value))
        except (ValueError, TypeError):
            return len(str(value).encode())

    def value_size(value):
        kind, raw = value.type, value.value
        if kind == "S":
            return len(raw.encode())
        if kind == "N":
            return number_size(str(raw))
        if kind == "B":
            return binary_size(raw)
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "SS":
            return sum(len(v.encode()) for v in raw)
        if kind == "NS":
            return sum(number_size(str(v)) for v in raw)
        if kind == "BS":
            return sum(binary_size(v) for v in raw)
        if kind == "L":
            return 3 + sum(1 + value_size(v if isinstance(v, DynamoType) else DynamoType(v))
                           for v in raw)
        if kind == "M":
            return 3 + sum(len(k.encode()) + 1 +
                           value_size(v if isinstance(v, DynamoType) else DynamoType(v))
                           for k, v in raw.items())
        return value.size()

    def attrs_size(attrs, names=None):
        return sum(len(k.encode()) + value_size(v) for k, v in attrs.items()
                   if names is None or k in names)

    def item_size(item):
        return attrs_size(item.attrs) if item is not None else 0

    def key_text(value):
        return value.value if value.type == "S" else str(value.value)

    def write_units(size):
        return max(1, math.ceil(size / 1024))

    def read_units(size, consistent):
        units = max(1, math.ceil(size / 4096))
        return float(units) if consistent else units / 2.0

    def gsi_view(table, index, item):
        """(index key value, projected attributes) of `item` in `index`, or None when
        the item is not in the index (an index key attribute missing)."""
        if item is None:
            return None
        attrs = item.attrs
        if any(name not in attrs for name in index.schema_key_attrs):
            return None
        hash_attr = next(k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH")
        projection = index.projection or {}
        kind = projection.get("ProjectionType", "ALL")
        if kind == "ALL":
            projected = attrs
        else:
            names = set(index.schema_key_attrs) | {table.hash_key_attr}
            if table.range_key_attr:
                names.add(table.range_key_attr)
            if kind == "INCLUDE":
                names.update(projection.get("NonKeyAttributes", []))
            projected = {k: v for k, v in attrs.items() if k in names}
        return key_text(attrs[hash_attr]), projected

    def write_charges(table, hash_value, old, new, factor):
        """[(key, units)] of one item write, the table's key first."""
        size = max(item_size(old), item_size(new))
        charges = [((table.name, None, key_text(hash_value)), write_units(size) * factor)]
        for index in table.global_indexes or []:
            before = gsi_view(table, index, old)
            after = gsi_view(table, index, new)
            if before is None and after is None:
                continue
            if before is not None and after is not None and before[0] == after[0]:
                if before[1] == after[1]:
                    continue
                units = write_units(attrs_size(after[1]))
                charges.append(((table.name, index.name, after[0]), units * factor))
                continue
            if before is not None:
                units = write_units(attrs_size(before[1]))
                charges.append(((table.name, index.name, before[0]), units * factor))
            if after is not None:
                units = write_units(attrs_size(after[1]))
                charges.append(((table.name, index.name, after[0]), units * factor))
        return charges

    def throttle_reason(table, key):
        _, index, _ = key
        if index is None:
            return "TableWriteKeyRangeThroughputExceeded", table.table_arn
        return "IndexWriteKeyRangeThroughputExceeded", f"{table.table_arn}/index/{index}"

    # GSI visibility: per table name, per item key, the version a delayed index still
    # shows (`base`, None when absent) and the versions written since with their time.
    gsi_history = {}

    def remember_version(table, key, old, new):
        if not GSI_DELAY or not table.global_indexes:
            return
        versions = gsi_history.setdefault(table.name, {})
        entry = versions.get(key)
        if entry is None:
            entry = versions[key] = [old, []]
        entry[1].append((time.monotonic(), copy.deepcopy(new) if new is not None else None))
        # Written to but never queried through an index: keep the history short.
        if len(versions) > 10000:
            settled_versions(table.name)

    def settled_versions(table_name):
        """{item key: version an index still shows} of the items written less than
        GSI_DELAY ago; forgets the rest."""
        versions = gsi_history.get(table_name)
        if not versions:
            return {}
        cutoff = time.monotonic() - GSI_DELAY
        young = {}
        for key, entry in list(versions.items()):
            base, writes = entry
            while writes and writes[0][0] <= cutoff:
                base = writes.pop(0)[1]
            entry[0] = base
            if writes:
                young[key] = base
            else:
                del versions[key]
        return young

    def delayed_items(table, items):
        """`items` (the table's items) as an index written GSI_DELAY ago shows them."""
        young = settled_versions(table.name)
        if not young:
            return items
        shown = [i for i in items if (i.hash_key, i.range_key) not in young]
        shown.extend(v for v in young.values() if v is not None)
        return shown

    def locate(table, kind, args, kwargs):
        """(hash, range) of the item a backend write names."""
        if kind == "put":
            attrs = args[0] if args else kwargs["item_attrs"]
            hash_value = DynamoType(attrs[table.hash_key_attr])
            range_value = (DynamoType(attrs[table.range_key_attr])
                           if table.range_key_attr else None)
            return hash_value, range_value
        key = args[0] if args else kwargs["key"]
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        return hash_value, range_value

    def restore(table, hash_value, range_value, old):
        """Puts the item back as it was before a refused write."""
        cache = sorted_cache.get(table)
        if cache:
            cache.pop(hash_value, None)
        if old is None:
            delete_item(table, hash_value, range_value)
        elif range_value is not None:
            table.items[hash_value][range_value] = old
        else:
            table.items[hash_value] = old

    def accounted_write(kind, original):
        def write(self, table_name, *args, **kwargs):
            table = self.get_table(table_name)
            try:
                hash_value, range_value = locate(table, kind, args, kwargs)
                old = table.get_item(hash_value, range_value)
            except Exception:
                # A malformed key: moto's own write answers it.
                return original(self, table_name, *args, **kwargs)
            in_tx = request.op in ("TransactWriteItems", "ExecuteTransaction")
            factor = 2 if in_tx else 1
            # An update changes the stored item in place: keep the old one aside.
            before = copy.deepcopy(old) if kind == "update" and old is not None else old
            try:
                result = original(self, table_name, *args, **kwargs)
            except Exception:
                # A failed condition still consumes the write (DynamoDB charges it).
                capacity.admit_writes(
                    [((table.name, None, key_text(hash_value)),
                      write_units(item_size(before)) * factor)], force=True)
                raise
            after = table.get_item(hash_value, range_value)
            over = capacity.admit_writes(write_charges(table, hash_value, before, after, factor))
            if over is not None:
                restore(table, hash_value, range_value, before)
                if in_tx:
                    raise ThrottlingError()
                if request.unprocessed is not None:
                    request.unprocessed.append((table.name, kind, args, kwargs))
                    return None
                raise ProvisionedThroughputExceeded(*throttle_reason(table, over))
            remember_version(table, (hash_value, range_value), before, after)
            return result
        return write

    DynamoDBBackend.put_item = accounted_write("put", DynamoDBBackend.put_item)
    DynamoDBBackend.update_item = accounted_write("update", DynamoDBBackend.update_item)
    DynamoDBBackend.delete_item = accounted_write("delete", DynamoDBBackend.delete_item)

    # Speed: moto backs a transaction up by deep-copying every table it names, whatever
    # it writes: with 100,000 records each transaction took seconds, so a sync's closing
    # transaction (its log and the config's hold) waited tens of seconds on a full table
    # — DynamoDB's do not grow with the table. The backup is of the items the
    # transaction names instead: moto's own copy is handed the table itself (its
    # rollback then puts back the same object), and a cancelled or refused transaction
    # puts each named item back as it was, last first.
    import types
    import moto.dynamodb.models as dynamodb_models
    from moto.dynamodb.models.table import Table as MotoTable

    def no_table_copy(value, memo=None):
        return value if isinstance(value, MotoTable) else copy.deepcopy(value, memo)

    dynamodb_models.copy = types.SimpleNamespace(deepcopy=no_table_copy, copy=copy.copy)
    backend_transact = DynamoDBBackend.transact_write_items

    def named_items(backend, transact_items):
        """(table, hash, range, the item now) of every item a transaction names."""
        named = []
        for entry in transact_items or []:
            try:
                _, op = next(iter(entry.items()))
                table = backend.get_table(op["TableName"])
                attrs = op.get("Item") if "Item" in op else op["Key"]
                hash_value = DynamoType(attrs[table.hash_key_attr])
                range_value = (DynamoType(attrs[table.range_key_attr])
                               if table.range_key_attr else None)
                now_item = table.get_item(hash_value, range_value)
            except Exception:
                # A malformed item: moto's own transaction refuses it before writing.
                continue
            named.append((table, hash_value, range_value, copy.deepcopy(now_item)))
        return named

    def item_backed_transaction(self, transact_items):
        named = named_items(self, transact_items)
        try:
            return backend_transact(self, transact_items)
        except Exception:
            for table, hash_value, range_value, before in reversed(named):
                restore(table, hash_value, range_value, before)
            raise

    DynamoDBBackend.transact_write_items = item_backed_transaction

    backend_get_item = DynamoDBBackend.get_item
    backend_query = DynamoDBBackend.query
    backend_scan = DynamoDBBackend.scan

    def read_throttled(table, index, value):
        """Raises DynamoDB's answer when the key read has no room left."""
        key = (table.name, index, value)
        if capacity.read_room(key):
            return key
        if request.op == "TransactGetItems":
            raise ThrottlingError()
        resource = table.table_arn if index is None else f"{table.table_arn}/index/{index}"
        reason = ("TableReadKeyRangeThroughputExceeded" if index is None
                  else "IndexReadKeyRangeThroughputExceeded")
        raise ProvisionedThroughputExceeded(reason, resource)

    def counted_get_item(self, table_name, keys, *args, **kwargs):
        if request.op not in READ_OPS:
            return backend_get_item(self, table_name, keys, *args, **kwargs)
        table = self.get_table(table_name)
        value = keys.get(table.hash_key_attr)
        if not isinstance(value, dict):
            return backend_get_item(self, table_name, keys, *args, **kwargs)
        key = read_throttled(table, None, key_text(DynamoType(value)))
        item = backend_get_item(self, table_name, keys, *args, **kwargs)
        consistent = request.consistent or request.op == "TransactGetItems"
        units = read_units(item_size(item), consistent)
        if request.op == "TransactGetItems":
            units *= 2
        capacity.charge_reads(key, units)
        return item

    def counted_query(self, table_name, hash_key_dict, *args, **kwargs):
        table = self.get_table(table_name)
        index_name = kwargs.get("index_name")
        is_gsi = index_name and any(i.name == index_name for i in table.global_indexes or [])
        key = None
        if isinstance(hash_key_dict, dict) and hash_key_dict:
            # A local index shares the table's partition.
            key = read_throttled(table, index_name if is_gsi else None,
                                 key_text(DynamoType(hash_key_dict)))
        if is_gsi and GSI_DELAY:
            stored = table.all_items
            table.all_items = lambda: delayed_items(table, stored())
            try:
                result = backend_query(self, table_name, hash_key_dict, *args, **kwargs)
            finally:
                del table.all_items
        else:
            result = backend_query(self, table_name, hash_key_dict, *args, **kwargs)
        if key is not None:
            consistent = bool(kwargs.get("consistent_read"))
            size = sum(item_size(item) for item in result[0])
            capacity.charge_reads(key, read_units(size, consistent))
        return result

    def counted_scan(self, table_name, *args, **kwargs):
        result = backend_scan(self, table_name, *args, **kwargs)
        table = self.get_table(table_name)
        consistent = bool(kwargs.get("consistent_read", args[7] if len(args) > 7 else False))
        sizes = {}
        for item in result[0]:
            value = key_text(item.hash_key)
            sizes[value] = sizes.get(value, 0) + item_size(item)
        for value, size in sizes.items():
            capacity.charge_reads((table.name, None, value), read_units(size, consistent))
        return result

    DynamoDBBackend.get_item = counted_get_item
    DynamoDBBackend.query = counted_query
    DynamoDBBackend.scan = counted_scan

    # Read consistency is a request parameter moto's handler has already parsed.
    def with_consistency(original):
        def handle(self):
            request.consistent = bool(self.body.get("ConsistentRead", False))
            return original(self)
        return handle

    DynamoHandler.get_item = with_consistency(DynamoHandler.get_item)

    def consistent_batch_get(original):
        def handle(self):
            batches = self.body.get("RequestItems") or {}
            request.consistent = any(bool(b.get("ConsistentRead")) for b in batches.values()
                                     if isinstance(b, dict))
            return original(self)
        return handle

    DynamoHandler.batch_get_item = consistent_batch_get(DynamoHandler.batch_get_item)

    # Injected faults: one draw per request from a seeded generator, so a run with the
    # same requests in the same order meets the same faults.
    faults = random.Random(FAULT_SEED)

    def draw():
        """'conflict', 'throttle' or None for the request being served."""
        if not (FAULTS["conflict"] or FAULTS["throttle"]):
            return None
        roll = faults.random()
        if roll < FAULTS["conflict"]:
            fault = "conflict"
        elif roll < FAULTS["conflict"] + FAULTS["throttle"]:
            fault = "throttle"
        else:
            return None
        injected[fault] += 1
        return fault

    def faulty_transaction(original):
        def handle(self):
            fault = draw()
            if fault is not None:
                items = self.body.get("TransactItems") or [None]
                struck = faults.randrange(len(items))
                code, message = (("TransactionConflict", CONFLICT_MESSAGE) if fault == "conflict"
                                 else ("ThrottlingError", TX_THROTTLE_MESSAGE))
                raise TransactionCanceledException(
                    [(code, message, None) if n == struck else (None, None, None)
                     for n in range(len(items))])
            return original(self)
        return handle

    DynamoHandler.transact_write_items = faulty_transaction(DynamoHandler.transact_write_items)

    def table_arn_of(handler, name):
        try:
            return handler.dynamodb_backend.get_table(name).table_arn
        except Exception:
            return name

    def faulty_write(original):
        def handle(self):
            if draw() == "throttle":
                name = self.body.get("TableName") or next(iter(self.body.get("RequestItems") or {}), "")
                raise ProvisionedThroughputExceeded(
                    "TableWriteKeyRangeThroughputExceeded", table_arn_of(self, name))
            return original(self)
        return handle

    DynamoHandler.put_item = faulty_write(DynamoHandler.put_item)
    DynamoHandler.update_item = faulty_write(DynamoHandler.update_item)
    DynamoHandler.delete_item = faulty_write(DynamoHandler.delete_item)

    # BatchWriteItem: an item over its partition's limit comes back in UnprocessedItems;
    # none processed at all is a ProvisionedThroughputExceededException, as DynamoDB does.
    def unprocessed_request(table, kind, args, kwargs):
        if kind == "put":
            return {"PutRequest": {"Item": args[0] if args else kwargs["item_attrs"]}}
        return {"DeleteRequest": {"Key": args[0] if args else kwargs["key"]}}

    def batch_write(original):
        def handle(self):
            request.unprocessed = []
            try:
                result = original(self)
                left = request.unprocessed
            finally:
                request.unprocessed = None
            if left:
                total = sum(len(v) for v in (self.body.get("RequestItems") or {}).values())
                table = self.dynamodb_backend.get_table(left[0][0])
                if len(left) >= total:
                    raise ProvisionedThroughputExceeded(
                        "TableWriteKeyRangeThroughputExceeded", table.table_arn)
                unprocessed = {}
                for table_name, kind, args, kwargs in left:
                    unprocessed.setdefault(table_name, []).append(
                        unprocessed_request(table, kind, args, kwargs))
                result.result["UnprocessedItems"] = unprocessed
            return result
        return handle

    DynamoHandler.batch_write_item = batch_write(faulty_write(DynamoHandler.batch_write_item))

# ---------------------------------------------------------------------------------------
# SQS receives one at a time. moto's ReceiveMessage checks that a message is visible and
# then marks it received, with nothing between the two holding other threads off: two
# pollers receiving from one queue at once could both be handed the same message (a CI
# run saw one message of 41 handled twice). SQS hides a message from every other
# receive the moment one receive takes it. So the scan-and-mark of a receive runs under
# one lock, released while a long poll waits for messages to arrive.
# ---------------------------------------------------------------------------------------
if PATCHED:
    import moto.sqs.models as sqs_models

    sqs_receiving = threading.Lock()
    receive_message = sqs_models.SQSBackend.receive_message
    wait_for_messages = sqs_models.Queue.wait_for_messages

    def serial_receive(self, *args, **kwargs):
        with sqs_receiving:
            return receive_message(self, *args, **kwargs)

    def unlocked_wait(self, timeout):
        # Only a receive waits (moto calls it from receive_message alone), so the lock
        # is held here.
        sqs_receiving.release()
        try:
            wait_for_messages(self, timeout)
        finally:
            sqs_receiving.acquire()

    sqs_models.SQSBackend.receive_message = serial_receive
    sqs_models.Queue.wait_for_messages = unlocked_wait

    # Speed, same answers: with 10,000 messages queued moto spent a core on SQS alone.
    # A queue's visible messages were found by two clock reads through datetime per
    # message on every receive (and every long poll's check), and a delete walked every
    # message twice comparing receipt handles. The clock is read once per pass, and
    # receipt handles are indexed as moto hands them out.
    def now_ms():
        return time.time() * 1000.0

    def visible_messages(self):
        now = now_ms()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed_count(self):
        now = now_ms()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible_count(self):
        now = now_ms()
        return sum(1 for m in self._messages if not now > m.visible_at)

    sqs_models.Queue.messages = property(visible_messages)
    sqs_models.Queue.approximate_number_of_messages_delayed = property(delayed_count)
    sqs_models.Queue.approximate_number_of_messages_not_visible = property(not_visible_count)

    # Every receipt handle moto has given a message, to the message.
    receipts = {}
    mark_received = sqs_models.Message.mark_received

    def indexed_mark_received(self, *args, **kwargs):
        mark_received(self, *args, **kwargs)
        receipts[self.receipt_handle] = self

    # moto's delete also rebuilt the queue's list of messages without the lock its sends
    # append under, so a message sent while a delete ran could vanish (57 of 10,000 events
    # in a dispatch bench run): the message is removed in place, under that lock.
    def indexed_delete(self, receipt_handle):
        if receipt_handle in self.deleted_messages:
            return  # deleted before: SQS accepts it again
        message = receipts.get(receipt_handle)
        if message is None:
            raise sqs_models.ReceiptHandleIsInvalid()
        with self._messages_lock:
            try:
                self._messages.remove(message)  # by identity: messages define no __eq__
            except ValueError:
                raise sqs_models.ReceiptHandleIsInvalid() from None
        self.pending_messages.discard(message)
        handles = message.all_receipt_handles
        self.deleted_messages.update(handles)
        for handle in handles:
            receipts.pop(handle, None)

    sqs_models.Message.mark_received = indexed_mark_received
    sqs_models.Queue.delete_message = indexed_delete

    # A receive checked each message's retention through GetQueueAttributes, which
    # built every attribute of the queue (three counts over every message) once per name
    # asked for: a receive cost a walk of the queue per message it returned.
    def queue_attributes(self, queue_name, attribute_names):
        queue = self.get_queue(queue_name)
        if not attribute_names:
            return {}
        valid = ["All"] + queue.BASE_ATTRIBUTES + queue.FIFO_ATTRIBUTES + queue.KMS_ATTRIBUTES
        invalid = next((name for name in attribute_names if name not in valid), None)
        if invalid or invalid == "":
            raise sqs_models.InvalidAttributeName(invalid)
        every = queue.attributes
        if "All" in attribute_names:
            return every
        return {name: every[name] for name in attribute_names
                if name in every and every[name] is not None}

    def retained(self, queue_name, message):
        period = self.get_queue(queue_name).message_retention_period
        return period + message.sent_timestamp / 1000 > time.time()

    sqs_models.SQSBackend.get_queue_attributes = queue_attributes
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = retained

import logging
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server.main(sys.argv[1:])
