"""What ``qt_api/qt_api.json`` does not say and ``qt_calls.py`` needs: default arguments of Qt's public methods,
property types and the return types the check follows. (The signals Qt 6 removed need no list here: the JSON is
parsed from the Qt 6 headers too, keeps only what every configuration declares, and names what it left out in
``_meta.not_in_every_configuration``.)

The JSON (parsed from the real headers: Qt 5.15.8, CTK and Slicer 5.8.0 / 5.10.0 / main, and Slicer main on Qt 6)
keeps every callable's parameter types, and for signals, slots and ``Q_INVOKABLE``s one entry per callable arity (moc
registers each), so their default arguments are already there. For Qt's plain public methods (which PythonQt reaches
through its generated wrappers) it drops which trailing parameters have defaults; ``DEFAULTS`` adds them, by hand from
the Qt 5.15 and Qt 6 class documentation (doc.qt.io, the same in both), for the methods the module calls and their
overloads. A method missing here is taken to have no default, so a call with fewer arguments fails the check until
the entry is added.

The Slicer / qMRML entries the module uses were read again in the Slicer repository at v5.10.0 (a2b6d082) and main
(583e9b37): ``qMRMLNodeComboBox::setCurrentNode(vtkMRMLNode*)`` and ``setCurrentNode(const QString&)`` (public slots),
``currentNode()`` (``Q_INVOKABLE``, returns ``vtkMRMLNode*``), ``qMRMLTableView::setMRMLTableNode(vtkMRMLNode*)`` /
``(vtkMRMLTableNode*)`` and ``qMRMLWidget::setMRMLScene(vtkMRMLScene*)`` (public slots, no defaults): as in the JSON.
"""

from typing import Dict

# "Class.signature" (the JSON's normalised form) -> how many trailing parameters have a default value
DEFAULTS: Dict[str, int] = {
    # QComboBox (qcombobox.h 5.15 / 6.x)
    "QComboBox.addItem(QString,QVariant)": 1,  # userData = QVariant()
    "QComboBox.addItem(QIcon,QString,QVariant)": 1,
    "QComboBox.insertItem(int,QString,QVariant)": 1,
    "QComboBox.insertItem(int,QIcon,QString,QVariant)": 1,
    "QComboBox.setItemData(int,QVariant,int)": 1,  # role = Qt::UserRole
    "QComboBox.itemData(int,int)": 1,
    "QComboBox.findText(QString,Qt::MatchFlags)": 1,
    "QComboBox.findData(QVariant,int,Qt::MatchFlags)": 2,
    "QComboBox.currentData(int)": 1,
    "QComboBox.QComboBox(QWidget*)": 1,  # parent = nullptr
    # QFileDialog: static getExistingDirectory(parent = nullptr, caption = QString(), dir = QString(),
    # options = ShowDirsOnly)
    "QFileDialog.getExistingDirectory(QWidget*,QString,QString,Options)": 4,
    # QTimer(QObject *parent = nullptr)
    "QTimer.QTimer(QObject*)": 1,
    # CTK constructors: ctkSliderWidget(QWidget* parent = nullptr) (ctkSliderWidget.h)
    "ctkSliderWidget.ctkSliderWidget(QWidget*)": 1,
    # QFormLayout: addRow / removeRow / rowCount have no defaults
    # QBoxLayout::addWidget(QWidget*, int stretch = 0, Qt::Alignment alignment = Qt::Alignment())
    "QBoxLayout.addWidget(QWidget*,int,Qt::Alignment)": 2,
    # QSettings (qsettings.h): QSettings(QObject* parent = nullptr), QSettings(Scope scope = UserScope) (5.15, 6.x);
    # value(key, defaultValue = QVariant()) in 5.15, value(key) and value(key, defaultValue) overloads in 6.x
    "QSettings.QSettings(QObject*)": 1,
    "QSettings.QSettings(Scope)": 1,
    "QSettings.value(QString,QVariant)": 1,
    # QCoreApplication::processEvents(QEventLoop::ProcessEventsFlags flags = QEventLoop::AllEvents) (static)
    "QCoreApplication.processEvents(QEventLoop::ProcessEventsFlags)": 1,
}

# Qt property types (C++ type as in the header) of the properties the module reads or writes; the JSON has names,
# writability and NOTIFY only. Qt: qwidget.h, qlabel.h, qabstractbutton.h, qlineedit.h, qcombobox.h, qprogressbar.h,
# qspinbox.h (5.15 and 6.x agree); CTK: ctkSliderWidget.h, ctkPathLineEdit.h (the CTK commits in the JSON's _meta).
PROPERTY_TYPES: Dict[str, str] = {
    "QWidget.enabled": "bool",
    "QWidget.visible": "bool",
    "QWidget.toolTip": "QString",
    "QObject.objectName": "QString",
    "QLabel.text": "QString",
    "QAbstractButton.text": "QString",
    "QAbstractButton.checked": "bool",
    "QLineEdit.text": "QString",
    "QComboBox.count": "int",
    "QComboBox.currentIndex": "int",
    "QComboBox.currentText": "QString",
    "QProgressBar.value": "int",
    "QSpinBox.value": "int",
    "QDoubleSpinBox.value": "double",
    "ctkSliderWidget.value": "double",
    "ctkSliderWidget.decimals": "int",
    "ctkSliderWidget.singleStep": "double",
    "ctkSliderWidget.minimum": "double",
    "ctkSliderWidget.maximum": "double",
    "ctkSliderWidget.tracking": "bool",
    "ctkPathLineEdit.currentPath": "QString",
}

# return types the check follows to type the next call's receiver ("Class.member" -> class name in the JSON, or
# "object": some non-Qt object such as a vtkMRMLNode). QWidget::layout() is refined by the .ui file's layout class.
RETURNS: Dict[str, str] = {
    "QWidget.layout": "QLayout",
    "qMRMLNodeComboBox.currentNode": "object",  # vtkMRMLNode*
}
