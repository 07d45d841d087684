# -*- coding: utf-8 -*-
"""The compatibility scenario: the real slapos.slap client (slapos.core 1.26.1) drives a
SLAP master and records everything it observes, as one JSON document on stdout.

    python scenario.py URL [--key-file KEY --cert-file CERT] [--pause-after STEP]

It runs unchanged against a real `slapos proxy start` (computer_id COMP-A) and against
our gateway (`[slap] default_computer = "COMP-A"`); tests/tests/compat.rs compares the
two documents. The document keeps raw values (instance guids, slave references,
timestamps): normalising them is the comparison's job. Two things are computed here
because only the client's point of view knows them:

* `~timestamp` beside every partition or instance the client sees: `new` (first time
  this partition shows a timestamp), `same` or `changed` (against the last value the
  client saw for that partition, wherever it saw it). slapgrid reprocesses a partition
  exactly when that string changes, so this is the behaviour that matters;
* `wire`: per step, every HTTP call the library made (`GET name status`), with the body
  of plain-text 200 answers (`done`, `OK`, `Not destroying yet ...`), which the library
  itself throws away.

With `--key-file`/`--cert-file` the client presents that certificate (slapos.slap's own
`key_file`/`cert_file` options), as against a gateway requiring certificates of the group.

`--pause-after STEP` writes `PAUSED <STEP>` on stderr after that step and waits for a
line on stdin before going on (the test kills the leader there).
"""
import json
import sys

import requests

import slapos.slap
from slapos.util import dumps

COMP = 'COMP-A'    # slapproxy's computer_id / the gateway's default_computer
OTHER = 'COMP-B'
SR = 'https://lab.example/software/app/software.cfg'
SR_FRONT = 'https://lab.example/software/frontend/software.cfg'
SR_B = 'https://lab.example/software/other/software.cfg'
SR_UNUSED = 'https://lab.example/software/unused/software.cfg'
SR_NOBODY = 'https://lab.example/software/nobody/software.cfg'

# A valid usage journal (computer_consumption.xsd), as `slapos node report` sends it.
JOURNAL = (
  '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
  '<title>Resource consumptions</title><start_date></start_date>'
  '<stop_date>2026-11-25 at 17:20:31</stop_date><reference>COMP-A</reference>'
  '<currency></currency><payment_mode></payment_mode><category></category>'
  '<arrow type="Administration"><source></source><destination></destination></arrow>'
  '<movement><resource>service_module/cpu_load_percent</resource>'
  '<title>Average CPU load</title><reference>slappart0</reference><quantity>3.75</quantity>'
  '<price>0.0</price><VAT>None</VAT><category>cpu</category></movement>'
  '</transaction></journal>')

MASTER = sys.argv[1]


def option(name):
  if name in sys.argv:
    return sys.argv[sys.argv.index(name) + 1]
  return None


PAUSE_AFTER = option('--pause-after')
KEY_FILE = option('--key-file')
CERT_FILE = option('--cert-file')

# ------------------------------------------------------------------ wire recording
WIRE = []
_get, _post = requests.get, requests.post


def _record(method, real):
  def call(url, *args, **kw):
    response = real(url, *args, **kw)
    name = url[len(MASTER):] if url.startswith(MASTER) else url
    entry = '%s %s %s' % (method, name.split('?')[0], response.status_code)
    text = response.text
    if response.status_code == 200 and not text.lstrip().startswith('<'):
      entry += ' ' + json.dumps(text)
    WIRE.append(entry)
    return response
  return call


requests.get = _record('GET', _get)
requests.post = _record('POST', _post)

# ------------------------------------------------------------------ describing
SEEN_TIMESTAMPS = {}


def jsonable(value):
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, bytes):
    return {'~bytes': value.decode('utf-8', 'replace')}
  if isinstance(value, tuple):
    return {'~tuple': [jsonable(v) for v in value]}
  if isinstance(value, list):
    return [jsonable(v) for v in value]
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      key = k if isinstance(k, str) else '~%s:%r' % (type(k).__name__, k)
      out[key] = jsonable(v)
    return out
  if isinstance(value, (slapos.slap.ComputerPartition, slapos.slap.Computer,
                        slapos.slap.SoftwareRelease, slapos.slap.SoftwareInstance)):
    out = {'~class': type(value).__name__}
    for k, v in value.__dict__.items():
      if k in ('_connection_helper', '_hateoas_navigator'):
        continue
      out[k] = jsonable(v)
    mark_timestamp(out)
    return out
  return {'~repr': repr(value)}


def mark_timestamp(d, key=None):
  """Adds `~timestamp` (new/same/changed) to a described partition or instance."""
  params = d.get('_parameter_dict')
  if not isinstance(params, dict) or 'timestamp' not in params:
    return
  if key is None:
    key = (d.get('_computer_id') or d.get('slap_computer_id'),
           d.get('_partition_id') or d.get('slap_computer_partition_id'))
    if 'slap_computer_id' in d and d.get('_synced'):
      # a shared request's answer names its host partition: keep it apart
      key = ('shared',) + key
  value = json.dumps(params['timestamp'])
  last = SEEN_TIMESTAMPS.get(key)
  d['~timestamp'] = 'new' if last is None else ('same' if last == value else 'changed')
  SEEN_TIMESTAMPS[key] = value


# ------------------------------------------------------------------ steps
STEPS = []


def step(label, fn):
  del WIRE[:]
  entry = {'step': label}
  try:
    entry['result'] = jsonable(fn())
  except Exception as e:  # what the client raised is an observation too
    entry['error'] = type(e).__name__
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    if status is not None:
      entry['error_status'] = status
    entry['~message'] = str(e)[:300]
  entry['wire'] = list(WIRE)
  STEPS.append(entry)
  if label == PAUSE_AFTER:
    sys.stderr.write('PAUSED %s\n' % label)
    sys.stderr.flush()
    sys.stdin.readline()
  return entry.get('result')


def computer_dict(reference, n, base):
  partition_list = []
  for i in range(n):
    partition_list.append({
      'reference': 'slappart%d' % i,
      'path': '/srv/slapgrid/slappart%d' % i,
      'user': {'name': 'slapuser%d' % i, 'shell': '/bin/sh',
               'additional_group_list': [], 'path': '/srv/slapgrid/slappart%d' % i},
      'address_list': [
        {'addr': '10.0.%d.%d' % (base, i + 10), 'netmask': '255.255.255.0'},
        {'addr': '2001:db8:%x::%x' % (base, i + 10), 'netmask': 'ffff:ffff:ffff:ffff::'},
      ],
      'ipv6_range': {'addr': '2001:db8:%x:%x::' % (base, i + 1), 'prefixlen': 80},
      'tap': {'name': 'slaptap%d' % i, 'ipv4_addr': '', 'ipv4_netmask': '',
              'ipv4_gateway': '', 'ipv4_network': '', 'ipv6_addr': '',
              'ipv6_netmask': '', 'ipv6_gateway': '', 'ipv6_network': ''},
      'tun': None,
      'external_storage_list': [],
    })
  return {
    'reference': reference,
    'address': '10.0.%d.1' % base,
    'netmask': '255.255.255.0',
    'interface': {'name': 'lo', 'ipv4_local_network': '10.0.%d.0/24' % base},
    'software_user': 'slapsoft',
    'software_root': '/opt/slapgrid',
    'instance_root': '/srv/slapgrid',
    'partition_list': partition_list,
  }


def full(computer_id):
  """What slapgrid reads: getFullComputerInformation, software and partitions."""
  def fn():
    c = slap.registerComputer(computer_id)
    partitions = c.getComputerPartitionList()
    return {'software': c.getSoftwareReleaseList(), 'partitions': partitions}
  return fn


def partition(computer_id, partition_id):
  """What an instance reads of itself: registerComputerPartition (lazily)."""
  def fn():
    cp = slap.registerComputerPartition(computer_id, partition_id)
    cp.getInstanceParameterDict()
    return cp
  return fn


def slave_reference(host_view, title_param, value):
  for entry in host_view['_parameter_dict'].get('slave_instance_list', []):
    if entry.get(title_param) == value:
      return entry['slave_reference']
  raise AssertionError('no slave with %s=%s on the host: %r' % (title_param, value, host_view))


def scenario():
  global slap
  # ------------------------------------------------------------------ session
  slap = slapos.slap.slap()
  step('initializeConnection', lambda: slap.initializeConnection(
    MASTER, key_file=KEY_FILE, cert_file=CERT_FILE))
  step('getFullComputerInformation default computer before format', full(COMP))
  step('getFullComputerInformation unknown computer', full('COMP-NOPE'))

  # ------------------------------------------------------------------ format
  step('format COMP-A (8 partitions)',
       lambda: slap.registerComputer(COMP).updateConfiguration(dumps(computer_dict(COMP, 8, 1))))
  step('format COMP-B (2 partitions)',
       lambda: slap.registerComputer(OTHER).updateConfiguration(dumps(computer_dict(OTHER, 2, 2))))
  step('COMP-A formatted, all free', full(COMP))
  step('registerComputerPartition free partition', partition(COMP, 'slappart7'))
  step('registerComputerPartition unknown partition', partition(COMP, 'slappart99'))

  # ------------------------------------------------------------------ supply
  supply = slap.registerSupply()
  step('supply SR_FRONT on COMP-A', lambda: supply.supply(SR_FRONT, computer_guid=COMP))
  step('supply SR on COMP-A', lambda: supply.supply(SR, computer_guid=COMP))
  step('supply SR_B on COMP-B', lambda: supply.supply(SR_B, computer_guid=OTHER))
  step('supply with state started (invalid)',
       lambda: supply.supply(SR_UNUSED, computer_guid=COMP, state='started'))
  step('COMP-A software', full(COMP))
  step('COMP-B software', full(OTHER))
  step('software product lookup', lambda: slap.getSoftwareReleaseListFromSoftwareProduct('my-product'))
  step('software product lookup unknown',
       lambda: slap.getSoftwareReleaseListFromSoftwareProduct('no-such-product'))

  # ------------------------------------------------------------------ a tree
  oo = slap.registerOpenOrder()
  params = {'greeting': u'h\u00e9llo w\u00f6rld', 'count': 3, 'flag': True, 'empty': '',
            'special': 'a<b & "c" > \'d\''}
  params2 = dict(params, count=4)
  root = step('request root', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params, software_type='default', state='started'))
  step('re-request root identical', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params, software_type='default', state='started'))
  step('re-request root changed parameter', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params2, software_type='default', state='started'))
  ROOT_P = root['_partition_id']
  root_cp = slap.registerComputerPartition(COMP, ROOT_P)
  step('registerComputerPartition root', partition(COMP, ROOT_P))
  step('root publishes connection', lambda: root_cp.setConnectionDict(
    {'url': 'https://[2001:db8::10]:8443/', 'password': 'p&ss<w>rd', 'port': 8443}))

  child_params = {'_': json.dumps({'replicas': 2, 'name': 'child', 'tags': ['a', 'b']})}
  child = step('root requests child', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params))
  CHILD_P = child['_partition_id']
  child_cp = slap.registerComputerPartition(COMP, CHILD_P)
  grandchild = step('child requests grandchild', lambda: child_cp.request(SR, 'default', 'grandchild'))
  GRANDCHILD_P = grandchild['_partition_id']
  grandchild_cp = slap.registerComputerPartition(COMP, GRANDCHILD_P)
  step('registerComputerPartition grandchild', partition(COMP, GRANDCHILD_P))
  step('grandchild publishes connection', lambda: grandchild_cp.setConnectionDict(
    {'gc-url': 'http://10.0.1.12:9000'}))
  step('child publishes connection', lambda: child_cp.setConnectionDict(
    {'worker-url': 'http://10.0.1.11:8080', 'empty': ''}))
  step('grandchild publishes identical connection', lambda: grandchild_cp.setConnectionDict(
    {'gc-url': 'http://10.0.1.12:9000'}))
  step('COMP-A after the tree published', full(COMP))
  step('root re-requests child, sees its connection', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params))
  step('child re-requests grandchild, sees its connection',
       lambda: child_cp.request(SR, 'default', 'grandchild'))
  step('user re-requests root, sees its connection', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params2, software_type='default'))
  step('root connection parameter dict', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params2, software_type='default').getConnectionParameterDict())

  # ------------------------------------------------------------------ a shared instance
  host = step('request frontend host', lambda: oo.request(
    SR_FRONT, 'frontend', software_type='custom-frontend'))
  HOST_P = host['_partition_id']
  host_cp = slap.registerComputerPartition(COMP, HOST_P)
  step('root requests shared instance', lambda: root_cp.request(
    SR_FRONT, 'custom-frontend', 'my-shared', shared=True,
    partition_parameter_kw={'url': 'http://10.0.1.10:8080', 'port': 8080, 'https-only': True}))
  step('user requests shared instance pinned by instance_guid', lambda: oo.request(
    SR_FRONT, 'root-shared', software_type='custom-frontend', shared=True,
    partition_parameter_kw={'domain': 'example.org'},
    filter_kw={'instance_guid': host['_instance_guid']}))
  step('shared request, no host runs the release', lambda: oo.request(
    SR_NOBODY, 'orphan-shared', shared=True))
  host_view = step('registerComputerPartition host', partition(COMP, HOST_P))
  MY_SHARED = slave_reference(host_view, 'url', 'http://10.0.1.10:8080')
  step('host publishes the shared instance connection', lambda: host_cp.setConnectionDict(
    {'site_url': 'https://my-shared.example.org'}, slave_reference=MY_SHARED))
  step('root re-requests shared instance, sees its connection', lambda: root_cp.request(
    SR_FRONT, 'custom-frontend', 'my-shared', shared=True,
    partition_parameter_kw={'url': 'http://10.0.1.10:8080', 'port': 8080, 'https-only': True}))
  step('re-request shared instance with a changed parameter', lambda: root_cp.request(
    SR_FRONT, 'custom-frontend', 'my-shared', shared=True,
    partition_parameter_kw={'url': 'http://10.0.1.10:8081', 'port': 8080, 'https-only': True}))
  step('registerComputerPartition host after shared changes', partition(COMP, HOST_P))

  # ------------------------------------------------------------------ a second computer
  on_b = step('request pinned on COMP-B', lambda: oo.request(
    SR_B, 'on-b', filter_kw={'computer_guid': OTHER}))
  ON_B_P = on_b['_partition_id']
  on_b_cp = slap.registerComputerPartition(OTHER, ON_B_P)
  b_child = step('COMP-B instance requests a child', lambda: on_b_cp.request(SR, 'default', 'b-child'))
  B_CHILD_P = b_child['_partition_id']
  b_child_cp = slap.registerComputerPartition(b_child['slap_computer_id'], B_CHILD_P)
  step('COMP-A before the cross-computer publish', full(COMP))
  step('cross-computer child publishes connection', lambda: b_child_cp.setConnectionDict(
    {'b-url': 'http://10.0.1.14:7000'}))
  step('COMP-B after the cross-computer publish', full(OTHER))
  step('COMP-A after the cross-computer publish', full(COMP))
  step('request on COMP-B, its last free partition, a release not supplied there',
       lambda: oo.request(SR, 'on-b-2', filter_kw={'computer_guid': OTHER}))
  step('COMP-B software after allocating a release it was not supplied', full(OTHER))
  step('request on COMP-B, no free partition', lambda: oo.request(
    SR_B, 'on-b-3', filter_kw={'computer_guid': OTHER}))
  step('request on unknown computer', lambda: oo.request(
    SR, 'nowhere', filter_kw={'computer_guid': 'COMP-NOPE'}))
  step('COMP-A with the tree, the host and the cross-computer child', full(COMP))

  # ------------------------------------------------------------------ stop and start the tree
  step('stop root', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params2, software_type='default', state='stopped'))
  step('COMP-A after stopping the root', full(COMP))
  step('root re-requests child started while root stopped', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params, state='started'))
  step('child re-requests grandchild without state while root stopped',
       lambda: child_cp.request(SR, 'default', 'grandchild'))
  step('COMP-A after the members re-requested', full(COMP))
  step('start root', lambda: oo.request(
    SR, 'root', partition_parameter_kw=params2, software_type='default', state='started'))
  step('COMP-A after starting the root', full(COMP))
  step('root re-requests child started', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params, state='started'))
  step('child re-requests grandchild started',
       lambda: child_cp.request(SR, 'default', 'grandchild', state='started'))
  step('stop child only', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params, state='stopped'))
  step('COMP-A with the child stopped', full(COMP))
  step('root re-requests the stopped child without state', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params))
  step('start child again', lambda: root_cp.request(
    SR, 'worker', 'child', partition_parameter_kw=child_params, state='started'))

  # ------------------------------------------------------------------ node reports
  step('root reports started', lambda: root_cp.started())
  step('root reports stopped', lambda: root_cp.stopped())
  step('child reports an error', lambda: child_cp.error('Traceback: something failed'))
  step('registerComputerPartition root after reports', partition(COMP, ROOT_P))
  step('root partition certificate', lambda: root_cp.getCertificate())
  step('root hosting subscription ip list', lambda: root_cp.getFullHostingIpAddressList())
  sr_a = slap.registerSoftwareRelease(SR)
  sr_a._computer_guid = COMP
  step('node reports SR building', lambda: sr_a.building())
  step('node reports SR available', lambda: sr_a.available())
  step('node reports a software release error', lambda: sr_a.error('compilation failed'))
  step('node reports usage', lambda: slap.registerComputer(COMP).reportUsage(JOURNAL))
  step('node reports an invalid usage journal',
       lambda: slap.registerComputer(COMP).reportUsage('<journal><nonsense/></journal>'))

  # ------------------------------------------------------------------ bang
  step('grandchild bangs', lambda: grandchild_cp.bang('please reprocess'))
  step('COMP-A after the bang', full(COMP))
  step('computer bang', lambda: slap.registerComputer(COMP).bang('node rebooted'))
  step('COMP-A after the computer bang', full(COMP))

  # ------------------------------------------------------------------ rename
  step('child renames itself', lambda: child_cp.rename('child-renamed'))
  step('registerComputerPartition renamed child', partition(COMP, CHILD_P))
  step('root re-requests the child by its new title', lambda: root_cp.request(
    SR, 'worker', 'child-renamed', partition_parameter_kw=child_params, state='started'))
  old_child = step('root requests the old child title again',
                   lambda: root_cp.request(SR, 'worker', 'child'))
  OLD_CHILD_P = (old_child or {}).get('_partition_id')
  step('root renames itself', lambda: root_cp.rename('root-renamed'))
  step('user re-requests the renamed root', lambda: oo.request(
    SR, 'root-renamed', partition_parameter_kw=params2, software_type='default'))
  step('renamed root re-requests its child', lambda: root_cp.request(
    SR, 'worker', 'child-renamed', partition_parameter_kw=child_params))
  step('registerComputerPartition grandchild after root rename', partition(COMP, GRANDCHILD_P))
  step('rename unknown partition', lambda: slap.registerComputerPartition(
    COMP, 'slappart99').rename('ghost'))
  step('COMP-A after the renames', full(COMP))

  # ------------------------------------------------------------------ destruction and freeing
  step('destroy the pinned shared instance', lambda: oo.request(
    SR_FRONT, 'root-shared', software_type='custom-frontend', shared=True, state='destroyed',
    partition_parameter_kw={'domain': 'example.org'},
    filter_kw={'instance_guid': host['_instance_guid']}))
  step('registerComputerPartition host after shared destruction', partition(COMP, HOST_P))
  step('destroy the root', lambda: oo.request(
    SR, 'root-renamed', partition_parameter_kw=params2, software_type='default',
    state='destroyed'))
  step('COMP-A after destroying the root', full(COMP))
  step('root reports destroyed while it has children', lambda: root_cp.destroyed())
  step('COMP-A after the refused destroyed report', full(COMP))
  step('child reports destroyed', lambda: child_cp.destroyed())
  step('grandchild reports destroyed', lambda: grandchild_cp.destroyed())
  step('old-title child reports destroyed', lambda: slap.registerComputerPartition(
    COMP, OLD_CHILD_P).destroyed())
  step('root reports destroyed', lambda: root_cp.destroyed())
  step('unknown partition reports destroyed', lambda: slap.registerComputerPartition(
    COMP, 'slappart99').destroyed())
  step('COMP-A after freeing the tree', full(COMP))
  step('registerComputerPartition freed root partition', partition(COMP, ROOT_P))
  step('registerComputerPartition host after the tree is gone', partition(COMP, HOST_P))
  step('request a new root after freeing', lambda: oo.request(SR, 'after-free'))

  # ------------------------------------------------------------------ software destruction
  step('supply SR_UNUSED on COMP-A', lambda: supply.supply(SR_UNUSED, computer_guid=COMP))
  step('supply SR_UNUSED destroyed', lambda: supply.supply(SR_UNUSED, computer_guid=COMP,
                                                           state='destroyed'))
  step('COMP-A software with one destroyed', full(COMP))
  unused = slap.registerSoftwareRelease(SR_UNUSED)
  unused._computer_guid = COMP
  step('node reports SR_UNUSED destroyed', lambda: unused.destroyed())
  step('COMP-A software after destroyedSoftwareRelease', full(COMP))

  # ------------------------------------------------------------------ last: refusals
  # What follows changes slapproxy's state in ways ours refuses; nothing is observed after.
  step('host reports destroyed without being requested destroyed', lambda: host_cp.destroyed())
  b_child_2 = step('COMP-B instance requests a second child',
                   lambda: on_b_cp.request(SR, 'default', 'b-child-2'))
  step('rename to a title taken in the tree', lambda: slap.registerComputerPartition(
    b_child_2['slap_computer_id'], b_child_2['_partition_id']).rename('b-child'))
  step('an instance requests its own root', lambda: b_child_cp.request(SR, 'default', 'on-b'))
  step('request destroyed of an instance that never existed', lambda: oo.request(
    SR, 'never-existed', state='destroyed'))
  step('request with an SLA key nobody knows', lambda: oo.request(
    SR, 'odd-sla', filter_kw={'colour': 'blue'}))


try:
  scenario()
except Exception:  # a step the rest depends on failed: report what was seen so far
  import traceback
  STEPS.append({'step': 'ABORTED', 'error': 'scenario aborted',
                '~message': traceback.format_exc()[-2000:]})

json.dump({'master': MASTER, 'steps': STEPS}, sys.stdout, indent=1, sort_keys=True,
          ensure_ascii=False)
sys.stdout.write('\n')
