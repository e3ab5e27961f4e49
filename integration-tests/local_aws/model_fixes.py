"""Fixes to moto's EC2 model where it disagrees with EC2 on security groups of network interfaces.

Unlike the shims (which answer requests moto cannot), these patch moto's in-process model, because
the wrong state would otherwise leak into every later Describe call.

``NetworkInterfaceGroupsFix``:

- moto 5.2.5 reports an attached interface's groups as the *union* of the groups set on it and the
  groups the instance was launched with (``NetworkInterface.group_set``), so after
  ``ModifyNetworkInterfaceAttribute`` the launch groups never go away. On EC2 the groups given
  replace the interface's groups: "The new set of groups you specify replaces the current set"
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyNetworkInterfaceAttribute.html).
  Fixed: an interface reports exactly its own groups.
- ``ModifyInstanceAttribute`` ``Groups`` changes the groups of the instance, which on EC2 are those
  of its primary network interface (device index 0)
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceAttribute.html); moto
  changed only its instance record. Fixed: the primary interface is changed too, and changing the
  primary interface's groups changes the instance's ``SecurityGroups`` the same way.
- Both calls accepted unknown group IDs silently; EC2 answers ``InvalidGroup.NotFound``. Fixed.
"""

from __future__ import annotations

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.ec2.exceptions import InvalidSecurityGroupNotFoundError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    def group_set(self):  # an interface's groups are its own
        return self._group_set

    NetworkInterface.group_set = property(group_set)  # type: ignore[assignment]

    def _groups(backend, group_ids):
        groups = []
        for group_id in group_ids:
            group = backend.get_security_group_from_id(group_id)
            if group is None:
                raise InvalidSecurityGroupNotFoundError(group_id)
            groups.append(group)
        return groups

    original_modify_eni = EC2Backend.modify_network_interface_attribute

    def modify_network_interface_attribute(self, eni_id, group_ids, source_dest_check=None, description=None):
        _groups(self, group_ids or [])
        original_modify_eni(self, eni_id, group_ids, source_dest_check, description)
        eni = self.get_network_interface(eni_id)
        if group_ids and eni.instance is not None and eni.device_index == 0:
            eni.instance.security_groups = list(eni._group_set)

    EC2Backend.modify_network_interface_attribute = modify_network_interface_attribute

    def modify_instance_security_groups(self, instance_id, new_group_id_list):
        instance = self.get_instance(instance_id)
        groups = _groups(self, new_group_id_list)
        instance.security_groups = groups
        primary = next((n for n in instance.nics.values() if n.device_index == 0), None)
        if primary is not None:
            primary._group_set = list(groups)
        return instance

    EC2Backend.modify_instance_security_groups = modify_instance_security_groups
    _applied = True
