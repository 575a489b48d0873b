"""Slicer's Red, Yellow and Green slice views rendered offscreen, as the application draws them, without Qt.

The application logic, the colour, volume, transform and segmentation logics, the layout logic's view
nodes, one ``vtkMRMLSliceLogic`` per view, its blended layers as the background image (an image mapper,
as CTK's light-box renderer) and the slice view displayable managers (segmentations among them) on the
same renderer: the objects ``qMRMLSliceWidget`` sets up, on a real scene, drawn by EGL. Two traps: each
render window needs an interactor (the displayable managers dereference it), and Python must keep every
VTK object alive.
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # no X display here

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

VIEWS = ("Red", "Yellow", "Green")
DISPLAYABLE_MANAGERS = ("vtkMRMLModelSliceDisplayableManager", "vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLTransformsDisplayableManager2D")


class SliceViews:
    """The application's slice views over ``scene`` (call before adding data, as Slicer starts)."""

    def __init__(self, scene, size: tuple[int, int] = (400, 400)) -> None:
        self.scene, self.size = scene, size
        self.application = slicer.vtkSlicerApplicationLogic()
        self.application.SetMRMLScene(scene)
        slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(self.application)
        colors = slicer.vtkMRMLColorLogic()
        colors.SetMRMLApplicationLogic(self.application)
        colors.SetMRMLScene(scene)
        self.application.SetColorLogic(colors)
        self.logics = [colors]
        for name, logic in (("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic()), ("Volumes", slicer.vtkSlicerVolumesLogic()),
                            ("Transforms", slicer.vtkSlicerTransformLogic()), ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())):
            logic.SetMRMLApplicationLogic(self.application)
            logic.SetMRMLScene(scene)
            self.application.SetModuleLogic(name, logic)
            self.logics.append(logic)
        self.layout = slicer.vtkMRMLLayoutLogic()
        self.layout.SetMRMLScene(scene)
        self.layout.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        for manager in DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.views = {name: self._view(name, factory) for name in VIEWS}
        collection = vtk.vtkCollection()
        for view in self.views.values():
            collection.AddItem(view["logic"])
        self.application.SetSliceLogics(collection)

    def _view(self, name: str, factory) -> dict:
        node = self.scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.application)
        logic.SetSliceNode(node)
        logic.SetMRMLScene(self.scene)
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(*self.size)
        renderer = vtk.vtkRenderer()
        window.AddRenderer(renderer)
        interactor = vtk.vtkGenericRenderWindowInteractor()
        interactor.SetInteractorStyle(vtk.vtkInteractorStyleUser())
        interactor.SetRenderWindow(window)
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        image = vtk.vtkActor2D()
        image.SetMapper(mapper)
        image.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(image)
        managers = factory.InstantiateDisplayableManagers(renderer)
        logic.SetDisplayableManagerGroup(managers)
        managers.SetMRMLDisplayableNode(node)
        logic.ResizeSliceNode(*self.size)
        return {"node": node, "logic": logic, "window": window, "renderer": renderer, "interactor": interactor, "mapper": mapper,
                "image": image, "managers": managers}

    def fit_through(self, ras) -> None:
        """Fit every view to its layers (``setSliceViewerLayers(fit=True)``) and move it through the RAS point."""
        for view in self.views.values():
            view["logic"].FitSliceToAll()
            view["node"].JumpSliceByOffsetting(*ras)

    def render(self, name: str, png: Path | None = None) -> np.ndarray:
        """One view as RGB, rows top-down as in the PNG written to ``png``."""
        view = self.views[name]
        connection = view["logic"].GetImageDataConnection()
        if connection is not None:
            view["mapper"].SetInputConnection(connection)
        view["window"].Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(view["window"])
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        if png is not None:
            writer = vtk.vtkPNGWriter()
            writer.SetFileName(str(png))
            writer.SetInputConnection(grab.GetOutputPort())
            writer.Write()
        data = grab.GetOutput()
        width, height, _ = data.GetDimensions()
        return numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(height, width, 3)[::-1].copy()

    def pixel(self, name: str, ras) -> tuple[int, int, float]:
        """(row top-down, column, distance from the slice in slices) where the view shows RAS point ``ras``."""
        node = self.views[name]["node"]
        to_xy = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(node.GetXYToRAS(), to_xy)
        x, y, z, _ = to_xy.MultiplyPoint([*map(float, ras), 1.0])
        return self.size[1] - 1 - int(round(y)), int(round(x)), z
