"""Which nodes are a module's own outputs: a tag on each, so that a re-run replaces exactly them.

A module never modifies its input nodes. Every node (and subject-hierarchy folder) it creates is tagged
with the attribute :data:`OUTPUT_ATTRIBUTE` = ``<module>/<input node ID>`` (or another key, e.g. a
training's), so that running it again on the same input replaces exactly its earlier outputs and nothing
else. The tag is saved with the scene.
"""

from __future__ import annotations

import slicer
import vtk

OUTPUT_ATTRIBUTE = "crossmodal.Output"


def output_key(module: str, input_node) -> str:
    """The tag of ``module``'s outputs for ``input_node``."""
    return f"{module}/{input_node.GetID()}"


def training_key(module: str, model_id: str) -> str:
    """The tag of the plot of ``module``'s training of ``model_id`` (a new training of it replaces the plot)."""
    return f"{module}/training/{model_id}"


def mark(node, key: str):
    """Tag ``node`` as an output of ``key``; returns it."""
    node.SetAttribute(OUTPUT_ATTRIBUTE, key)
    return node


def own_outputs(scene, key: str) -> list:
    """The scene's nodes tagged ``key``."""
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()) if nodes.GetItemAsObject(i).GetAttribute(OUTPUT_ATTRIBUTE) == key]


def remove_outputs(scene, key: str) -> None:
    """Remove what an earlier run made for ``key``: its nodes (with their display and storage nodes) and
    its subject-hierarchy folders."""
    for node in own_outputs(scene, key):
        if node.IsA("vtkMRMLDisplayableNode"):
            for i in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(i)
                if display is not None:
                    scene.RemoveNode(display)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            scene.RemoveNode(node.GetStorageNode())
        scene.RemoveNode(node)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    for item in [items.GetId(i) for i in range(items.GetNumberOfIds())]:
        if hierarchy.GetItemAttribute(item, OUTPUT_ATTRIBUTE) == key:
            hierarchy.RemoveItem(item, False, False)
