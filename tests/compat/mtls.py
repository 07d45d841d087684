# -*- coding: utf-8 -*-
"""The real slapos.slap client over HTTPS with a client certificate (its key_file /
cert_file options), for tests/tests/mtls.rs:

    python mtls.py URL KEY CERT format COMPUTER N
    python mtls.py URL KEY CERT supply SOFTWARE COMPUTER
    python mtls.py URL KEY CERT request SOFTWARE TITLE COMPUTER
    python mtls.py URL KEY CERT register COMPUTER PARTITION

Prints OK (or the allocated partition for `request`) on success; on an HTTP refusal
prints `REFUSED <status> <body>` and exits 3.
"""
import sys

import slapos.slap
from slapos.util import dumps

url, key, cert, command = sys.argv[1:5]
args = sys.argv[5:]
slap = slapos.slap.slap()
slap.initializeConnection(url, key_file=key, cert_file=cert)

try:
  if command == 'format':
    computer, n = args[0], int(args[1])
    slap.registerComputer(computer).updateConfiguration(dumps({
      'reference': computer, 'address': '10.0.7.1', 'netmask': '255.255.255.0',
      'partition_list': [{
        'reference': 'slappart%d' % i,
        'address_list': [{'addr': '10.0.7.%d' % (i + 10), 'netmask': '255.255.255.0'}],
        'tap': {'name': 'slaptap%d' % i},
      } for i in range(n)]}))
    print('OK')
  elif command == 'supply':
    slap.registerSupply().supply(args[0], computer_guid=args[1])
    print('OK')
  elif command == 'request':
    software, title, computer = args
    p = slap.registerOpenOrder().request(software, title,
                                         filter_kw={'computer_guid': computer})
    print(p.getId())
  elif command == 'register':
    p = slap.registerComputerPartition(args[0], args[1])
    print('OK', p.getId())
  else:
    sys.exit('unknown command %r' % command)
except Exception as e:
  # slapos.slap raises its own classes for 404/408/5xx and requests' HTTPError otherwise
  response = getattr(e, 'response', None)
  status = getattr(response, 'status_code', None)
  text = getattr(response, 'text', '') or str(e)
  print('REFUSED %s %s %s' % (status, type(e).__name__, text.replace('\n', ' ')))
  sys.exit(3)
