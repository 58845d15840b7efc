# CMAKE_PROJECT_INCLUDE for building a ROS message package against the ROS 2 wheels from PyPI.
# Their exported CMake targets name the Python include folders of the machine that built the
# wheels (/opt/python/...), which do not exist here; CMake refuses an imported target with a
# missing include folder. At the end of the configure step, drop those folders from every
# imported target (the real ones come from this machine's Python through FindPython3).
function(_launch_env_drop_missing_includes)
  get_directory_property(_targets IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _launch_env_drop_missing_includes)
