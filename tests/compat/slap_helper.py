# -*- coding: utf-8 -*-
"""Small calls of the real slapos.slap client for tests/tests/compat.rs, around the real
`slapos request` / `slapos supply` commands:

    python slap_helper.py URL format COMPUTER N [--key-file KEY --cert-file CERT]
    python slap_helper.py URL full COMPUTER [--key-file KEY --cert-file CERT]
    python slap_helper.py URL publish COMPUTER PARTITION JSON_DICT [--key-file ... ]

With `--key-file`/`--cert-file` the client presents that certificate.

`full` prints, as JSON, what `getFullComputerInformation` tells the node: the software
releases with their requested state, and per partition its requested state, instance
title, software release, the instance parameters (without the reserved keys) and the
connection parameters.
"""
import json
import sys

import slapos.slap
from slapos.util import dumps

RESERVED = {'timestamp', 'ip_list', 'full_address_list', 'full_ip_list', 'slave_instance_list',
            'slap_computer_id', 'slap_computer_partition_id', 'slap_software_release_url',
            'slap_software_type', 'instance_title', 'root_instance_title',
            'root_instance_short_title'}

def option(name):
  if name in sys.argv:
    i = sys.argv.index(name)
    value = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    return value
  return None


key_file, cert_file = option('--key-file'), option('--cert-file')
url, command = sys.argv[1], sys.argv[2]
slap = slapos.slap.slap()
slap.initializeConnection(url, key_file=key_file, cert_file=cert_file)

if command == 'format':
  computer, n = sys.argv[3], int(sys.argv[4])
  partition_list = [{
    'reference': 'slappart%d' % i,
    'address_list': [{'addr': '10.0.9.%d' % (i + 10), 'netmask': '255.255.255.0'}],
    'tap': {'name': 'slaptap%d' % i},
  } for i in range(n)]
  print(slap.registerComputer(computer).updateConfiguration(dumps({
    'reference': computer, 'address': '10.0.9.1', 'netmask': '255.255.255.0',
    'partition_list': partition_list})))
elif command == 'full':
  c = slap.registerComputer(sys.argv[3])
  partitions = []
  for p in c.getComputerPartitionList():
    params = getattr(p, '_parameter_dict', None) or {}
    doc = getattr(p, '_software_release_document', None)
    partitions.append({
      'partition': p.getId(),
      'state': p._requested_state,
      'title': params.get('instance_title'),
      'software_type': params.get('slap_software_type'),
      'software_release': doc.getURI() if doc is not None else None,
      'parameters': {k: v for k, v in params.items() if k not in RESERVED},
      'shared': [{k: v for k, v in s.items() if k not in ('slave_reference', 'slave_title')}
                 for s in params.get('slave_instance_list', [])],
      'connection': getattr(p, '_connection_dict', None) or {},
    })
  print(json.dumps({
    'software': [{'url': s.getURI(), 'state': s.getState()} for s in c.getSoftwareReleaseList()],
    'partitions': partitions,
  }, indent=1, sort_keys=True))
elif command == 'publish':
  cp = slap.registerComputerPartition(sys.argv[3], sys.argv[4])
  cp.setConnectionDict(json.loads(sys.argv[5]))
  print('published')
else:
  sys.exit('unknown command %r' % command)
