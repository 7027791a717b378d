"""LoRaWAN uplinks from a network server (ChirpStack v4, The Things Stack v3) as contract readings.

``uplink`` parses each server's JSON events, ``devicemap`` reads the operator's device map,
``codecs`` decodes payload bytes (vendor JavaScript codecs in a sandbox, Cayenne LPP) and
``translate`` turns one event into native contract messages plus radio metadata. See the LoRaWAN
section of docs/contract.md.
"""
