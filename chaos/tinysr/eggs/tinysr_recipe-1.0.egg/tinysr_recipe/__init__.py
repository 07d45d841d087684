"""The buildout recipes of tinysr, an unpacked egg (EGG-INFO beside the package) that
buildout copies from the release's find-links folder: no wheel to build, no network.

tinysr_recipe (default): write the file `to`, from the file `from` or the option `text`,
    with the octal `mode` if given.
tinysr_recipe:publish: send every other option of the part to the master as the
    partition's connection parameters (setComputerPartitionConnectionXml, the form the
    real slap library posts: testdata/vectors/21-*), from [slap-connection].
"""
import os
import urllib.parse
import urllib.request
from xml.sax.saxutils import escape

OWN_OPTIONS = ('recipe',)


class File(object):
    def __init__(self, buildout, name, options):
        self.options = options

    def install(self):
        to = self.options['to']
        if 'from' in self.options:
            with open(self.options['from']) as f:
                text = f.read()
        else:
            text = self.options['text'] + '\n'
        os.makedirs(os.path.dirname(to), exist_ok=True)
        with open(to, 'w') as f:
            f.write(text)
        if 'mode' in self.options:
            os.chmod(to, int(self.options['mode'], 8))
        return [to]

    update = install


class Publish(object):
    def __init__(self, buildout, name, options):
        self.slap = buildout['slap-connection']
        self.parameters = {k: v for k, v in options.items()
                           if k not in OWN_OPTIONS and not k.startswith('_')}

    def install(self):
        # xml_marshaller's form of a dict of strings, as the slap library sends it.
        entries = ''.join('<string>%s</string><string>%s</string>' % (escape(k), escape(v))
                          for k, v in sorted(self.parameters.items()))
        computer, partition = self.slap['computer-id'], self.slap['partition-id']
        body = urllib.parse.urlencode([
            ('computer_id', computer),
            ('computer_partition_id', partition),
            ('connection_xml', '<marshal><dictionary id="i2">%s</dictionary></marshal>' % entries),
            ('slave_reference', 'None'),
        ]).encode()
        request = urllib.request.Request(
            self.slap['server-url'].rstrip('/') + '/setComputerPartitionConnectionXml',
            data=body,
            headers={
                'Content-Type': 'application/x-www-form-urlencoded',
                'Authorization': 'X-SlapPartition computer_id=%s, computer_partition_id=%s'
                                 % (computer, partition),
            })
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        return []

    update = install
