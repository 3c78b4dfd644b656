package recommend

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// floatMap is a map(string, double) for CEL that converts a value only when an
// expression reads it: the metrics and features maps have dozens of entries of which a
// rule reads a few, and converting them all up front was most of an evaluation's cost.
type floatMap map[string]float64

var _ traits.Mapper = floatMap(nil)

func (m floatMap) ConvertToNative(t reflect.Type) (any, error) {
	if reflect.TypeOf(map[string]float64(nil)).AssignableTo(t) {
		return map[string]float64(m), nil
	}
	return nil, fmt.Errorf("type conversion error from map(string, double) to %v", t)
}

func (m floatMap) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return m
	case types.TypeType:
		return types.MapType
	}
	return types.NewErr("type conversion error from map to %s", t)
}

func (m floatMap) Equal(other ref.Val) ref.Val {
	o, ok := other.(traits.Mapper)
	if !ok || types.Int(len(m)) != o.Size() {
		return types.False
	}
	for k, v := range m {
		w, found := o.Find(types.String(k))
		if !found || types.Equal(types.Double(v), w) != types.True {
			return types.False
		}
	}
	return types.True
}

func (m floatMap) Type() ref.Type { return types.MapType }
func (m floatMap) Value() any     { return map[string]float64(m) }

func (m floatMap) Contains(key ref.Val) ref.Val {
	_, found := m.Find(key)
	return types.Bool(found)
}

func (m floatMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

func (m floatMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	v, found := m[string(k)]
	if !found {
		return nil, false
	}
	return types.Double(v), true
}

func (m floatMap) Iterator() traits.Iterator {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return types.NewStringList(types.DefaultTypeAdapter, keys).Iterator()
}

func (m floatMap) Size() ref.Val { return types.Int(len(m)) }
